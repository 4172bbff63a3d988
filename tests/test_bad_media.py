"""Bad media through the whole run command (real keypoints, real files): truncated files,
garbage in the middle, empty files, a resolution change mid-stream, grey and 16-bit frames,
tiny frames. Each is processed as far as possible, problems are reported with frame
numbers, and the motion files are valid."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import CLIP
from streamer.cli import main
from streamer.sources import open_source

FRAMES = 60  # clip frames 70-129: the man on the box and the woman walking


def encode(path: Path, frames: list[np.ndarray], *, codec="mpeg4", pix_fmt="yuv420p", in_fmt="rgb24",
           container=None, options=None) -> Path:
    with av.open(str(path), "w", format=container, options=options or {}) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if codec == "mpeg4":
            stream.bit_rate = 2_000_000
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format=in_fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Small real media made from the clip, once for the module."""
    root = tmp_path_factory.mktemp("media")
    with av.open(str(CLIP)) as c:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(70 + FRAMES), c.decode(video=0)) if i >= 70]
    small = [cv2.resize(f, (480, 270), interpolation=cv2.INTER_AREA) for f in frames]
    # The index (moov atom) first, as cameras and streaming tools write MP4: a truncated file
    # stays readable up to the cut.
    out = {"clip": encode(root / "clip.mp4", small, options={"movflags": "+faststart"})}
    index_last = encode(root / "index_last.mp4", small[:10]).read_bytes()
    (root / "interrupted.mp4").write_bytes(index_last[: len(index_last) // 2])
    out["interrupted"] = root / "interrupted.mp4"
    data = out["clip"].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])
    damaged = bytearray(data)
    for offset in range(len(data) // 3, len(data) // 3 + 30000, 1500):
        damaged[offset:offset + 64] = bytes((offset * 7 + i) % 251 for i in range(64))
    (root / "garbage.mp4").write_bytes(bytes(damaged))
    (root / "empty.mp4").write_bytes(b"")
    out.update(truncated=root / "truncated.mp4", garbage=root / "garbage.mp4", empty=root / "empty.mp4")
    # The resolution changes after 30 frames: two MPEG-TS streams back to back, as a camera or
    # encoder switching modes produces.
    first = encode(root / "a.ts", [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in frames[:30]],
                   codec="mpeg2video", container="mpegts")
    second = encode(root / "b.ts", small[30:], codec="mpeg2video", container="mpegts")
    (root / "resize.ts").write_bytes(first.read_bytes() + second.read_bytes())
    out["resize"] = root / "resize.ts"
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in small[:20]]
    out["gray8"] = encode(root / "gray8.mkv", grey, codec="ffv1", pix_fmt="gray", in_fmt="gray")
    out["gray16"] = encode(root / "gray16.mkv", [g.astype(np.uint16) * 257 for g in grey], codec="ffv1",
                           pix_fmt="gray16le", in_fmt="gray16le")
    out["rgb48"] = encode(root / "rgb48.mkv", [f.astype(np.uint16) * 257 for f in small[:20]], codec="ffv1",
                          pix_fmt="rgb48le", in_fmt="rgb48le")
    folder = root / "mixed_png"
    folder.mkdir()
    for k, f in enumerate(small[:9]):
        bgr = cv2.cvtColor(f, cv2.COLOR_RGB2BGR)
        image = [bgr.astype(np.uint16) * 257,  # 16-bit colour
                 cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257,  # 16-bit grey
                 cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)][k % 3]  # 8-bit grey
        cv2.imwrite(str(folder / f"frame{k}.png"), image)
    out["mixed_png"] = folder
    out["tiny8"] = encode(root / "tiny8.mkv", [cv2.resize(f, (8, 8), interpolation=cv2.INTER_AREA) for f in small[:10]],
                          codec="ffv1", pix_fmt="yuv444p")
    ones = root / "one_pixel"
    ones.mkdir()
    for k in range(5):
        cv2.imwrite(str(ones / f"{k}.png"), np.full((1, 1, 3), 40 * k, np.uint8))
    out["one_pixel"] = ones
    return out


def run_command(source: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    stats = tmp_path / "stats.json"
    rc = main(["-q", "run", "--source", str(source), "--publish", "none", "--no-lift",
               "--record", str(tmp_path / "rec"), "--stats-json", str(stats), *extra])
    return rc, json.loads(stats.read_text()) if stats.exists() else {}


def keypoint_files(tmp_path: Path) -> list[dict]:
    out = []
    for path in sorted((tmp_path / "rec").glob("track_*_blazepose33.npz")):
        with np.load(path, allow_pickle=False) as data:
            out.append({k: data[k] for k in data.files})
    return out


def test_truncated_file_is_processed_up_to_the_cut(media, tmp_path, caplog):
    rc, stats = run_command(media["truncated"], tmp_path)
    assert rc == 0
    assert 20 < stats["frames"] < FRAMES
    assert f"decoded {stats['frames']} of the {FRAMES} frames" in caplog.text
    files = keypoint_files(tmp_path)
    assert files, "the people in the frames before the cut were recorded"
    for f in files:
        assert f["keypoints"].shape == (len(f["frame_index"]), 33, 3) and f["frame_index"].max() < stats["frames"]


def test_interrupted_mp4_without_its_index_is_one_clear_line(media, tmp_path, capsys):
    rc, _ = run_command(media["interrupted"], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "interrupted.mp4: not a readable video" in err[0]
    assert "moov" in err[0]  # says why: an MP4 whose recording was interrupted has no index


def test_garbage_in_the_middle_costs_only_the_damaged_frames(media, tmp_path, caplog):
    rc, stats = run_command(media["garbage"], tmp_path)
    assert rc == 0
    assert FRAMES // 2 < stats["frames"] <= FRAMES
    assert stats["source_faults"]["decode_errors"] > 0
    assert "after frame" in caplog.text  # "undecodable data after frame N" / "missing after frame N"
    files = keypoint_files(tmp_path)
    assert files and all(np.isfinite(f["keypoints"]).all() for f in files)
    assert max(f["frame_index"].max() for f in files) > FRAMES * 3 // 4  # went on after the damage


def test_zero_length_file_is_one_clear_line(media, tmp_path, capsys):
    rc, _ = run_command(media["empty"], tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"smplstream: error: {media['empty']}: the file is empty (0 bytes); "
                               "was the recording finished?"]


def test_resolution_change_mid_stream_keeps_outputs_consistent(media, tmp_path, caplog):
    preview = tmp_path / "preview.mp4"
    rc, stats = run_command(media["resize"], tmp_path, "--preview", str(preview))
    assert rc == 0
    assert "is 480x270, not 320x180 (resolution changed mid-stream)" in caplog.text
    assert "frame 29 is" in caplog.text or "frame 30 is" in caplog.text  # one frame may go at the splice
    assert stats["source_faults"]["resized_frames"] >= 29
    with av.open(str(preview)) as c:  # the preview has every frame, all at the run's size
        sizes = {(f.width, f.height) for f in c.decode(video=0)}
    assert sizes == {(320, 180)}
    files = keypoint_files(tmp_path)
    assert files
    for f in files:
        assert tuple(f["image_size"]) == (320, 180)
        seen = f["keypoints"][..., 2] > 0.5
        xy = f["keypoints"][..., :2][seen]
        assert (xy[:, 0] < 320 + 40).all() and (xy[:, 1] < 180 + 40).all()  # in the scaled frames


def test_grey_and_16_bit_frames_are_converted(media, tmp_path):
    grey8 = [f.image for f in open_source(str(media["gray8"])).frames()]
    grey16 = [f.image for f in open_source(str(media["gray16"])).frames()]
    rgb48 = [f.image for f in open_source(str(media["rgb48"])).frames()]
    clip = [f.image for f in open_source(str(media["clip"])).frames()][:20]
    assert len(grey8) == len(grey16) == len(rgb48) == 20
    for a, b, c, d in zip(grey8, grey16, rgb48, clip):
        assert a.shape == b.shape == c.shape == (270, 480, 3) and b.dtype == c.dtype == np.uint8
        assert np.abs(a.astype(int) - b).max() <= 1  # 16-bit grey scaled to 8 bits, not clipped
        assert (b[..., 0] == b[..., 1]).all() and (b[..., 1] == b[..., 2]).all()
        assert np.abs(c.astype(int) - d).mean() < 6  # 48-bit colour: the colours, not noise
    folder = [f.image for f in open_source(str(media["mixed_png"])).frames()]
    assert len(folder) == 9 and all(f.dtype == np.uint8 and f.shape == (270, 480, 3) for f in folder)
    np.testing.assert_allclose(folder[0].mean(), clip[0].mean(), atol=2)
    rc, stats = run_command(media["rgb48"], tmp_path)
    assert rc == 0 and stats["frames"] == 20 and keypoint_files(tmp_path)  # people found in 16-bit frames
    (tmp_path / "png").mkdir()
    rc, stats = run_command(media["mixed_png"], tmp_path / "png")
    assert rc == 0 and stats["frames"] == 9


@pytest.mark.parametrize("name, frames", [("tiny8", 10), ("one_pixel", 5)])
def test_tiny_frames_run_through_every_stage(media, tmp_path, name, frames):
    stats = tmp_path / "stats.json"
    rc = main(["-q", "run", "--source", str(media[name]), "--publish", "none", "--record",
               str(tmp_path / "rec"), "--stats-json", str(stats), "--preview", str(tmp_path / "p.mp4")])
    assert rc == 0
    summary = json.loads(stats.read_text())
    assert summary["frames"] == frames and set(summary["stages"]) >= {"keypoints", "lift", "refine", "publish"}
