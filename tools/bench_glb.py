"""Write the GLB (``--formats glb``) of every recorded track in a folder and print, per
track, its frames, the file's size and the write time (median of ``--repeat`` writes).

    python tools/bench_glb.py REC_DIR [--out DIR] [--repeat 5] [--tile N]

``REC_DIR`` holds ``track_NNNN.npz`` files from ``smplstream run --record``; the GLBs
go to ``--out`` (default: a temporary folder). The frames are read from the ``.npz``, so
this times the GLB writer alone (body model, pygltflib, the atomic write), not the
chunk reading of a recording's assembly. ``--tile N`` repeats each track N times end to
end (a long recording's size and write time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.body.body_model import BodyModel  # noqa: E402
from streamer.motion_formats import write_world_formats  # noqa: E402


class NpzRows:
    """A recorded track's ``.npz`` as the rows the motion-format writers read."""

    def __init__(self, path: Path, tile: int = 1):
        with np.load(path, allow_pickle=False) as z:
            self.arrays = {"poses": z["poses"], "trans": z["trans"], "betas": z["betas_per_frame"],
                           "frame_index": z["frame_index"]}
            self.betas = z["betas"]
            self.fps = float(z["mocap_framerate"])
        if tile > 1:
            fi = self.arrays["frame_index"]
            span = int(fi[-1] - fi[0]) + 1
            self.arrays = {k: np.concatenate([v] * tile) for k, v in self.arrays.items()}
            self.arrays["frame_index"] = np.concatenate([fi + i * span for i in range(tile)])
        self.frames = len(self.arrays["poses"])

    def blocks(self, *extra: str):
        yield tuple(self.arrays[n] for n in ("poses", "trans", *extra))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rec_dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tile", type=int, default=1, help="repeat each track N times end to end")
    args = parser.parse_args()
    torch.set_num_threads(1)
    body = BodyModel.load().double()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_glb_"))
    out.mkdir(parents=True, exist_ok=True)
    tracks = sorted(p for p in args.rec_dir.glob("track_*.npz") if p.stem[len("track_"):].isdigit())
    if not tracks:
        raise SystemExit(f"no track_NNNN.npz in {args.rec_dir}")
    print(f"{'track':<12} {'frames':>6} {'seconds':>8} {'GLB bytes':>10} {'write ms (median)':>18}")
    for path in tracks:
        rows = NpzRows(path, args.tile)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            (glb,) = write_world_formats(rows, out / path.stem, ("glb",), body, include_betas=False)
            times.append(time.perf_counter() - start)
        seconds = (rows.arrays["frame_index"][-1] - rows.arrays["frame_index"][0]) / rows.fps
        print(f"{path.stem:<12} {rows.frames:>6} {seconds:>8.2f} {glb.stat().st_size:>10} "
              f"{1000 * float(np.median(times)):>18.1f}")
    print(f"GLBs in {out}")


if __name__ == "__main__":
    main()
