"""The run command's output options end to end on the real clip (capture only, so it is
fast): --viewer-save, --formats, --preview-skeleton and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.cli import main

CLIP = str(Path(__file__).parent / "data" / "sports2d_demo.mp4")


def test_viewer_save_writes_every_frame(tmp_path):
    pytest.importorskip("rerun")
    from rerun.chunk import RrdReader

    rrd = tmp_path / "run.rrd"
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--no-perception", "--max-frames", "3",
                 "--viewer-save", str(rrd)]) == 0
    rows = sum(c.num_rows for c in RrdReader(rrd).stream() if c.entity_path == "/world/camera/image")
    assert rows == 3


@pytest.mark.parametrize("argv, message", [
    (["--formats", "bvh"], "--formats needs --record"),
    (["--record", "REC", "--formats", "npz,fbx"], "fbx"),
    (["--preview-skeleton"], "--preview-skeleton needs --preview"),
    (["--viewer-save", "out.mp4"], ".rrd"),
])
def test_output_option_errors(tmp_path, capsys, argv, message):
    argv = [a.replace("REC", str(tmp_path / "rec")) for a in argv]
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--no-perception", "--max-frames", "1",
                 *argv]) == 2
    assert message in capsys.readouterr().err


def test_viewer_without_a_display_says_what_to_do(monkeypatch, capsys):
    pytest.importorskip("rerun")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main(["-q", "run", "--source", CLIP, "--publish", "none", "--no-perception", "--max-frames", "1",
                 "--viewer"]) == 2
    assert "--viewer-save" in capsys.readouterr().err
