"""CPU time per BodyModel forward pass: batch 1 and 64, joints-only and full mesh.

    /work/venv/bin/python tools/bench_body_model.py [--threads 2] [--model PATH]

Prints the median over repeated runs (after warm-up) of a forward pass, and of a
forward + backward to pose and betas (what guidance costs), in milliseconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.body.body_model import BodyModel  # noqa: E402


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = BodyModel.load(args.model)
    print(f"model {model.name}: {model.num_vertices} vertices, float32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'path':34s} {'batch':>5s} {'forward ms':>11s} {'fwd+bwd ms':>11s}")
    for B in (1, 64):
        g = torch.Generator().manual_seed(0)
        pose = 0.3 * torch.randn(B, 24, 6, generator=g)
        betas = torch.randn(B, 10, generator=g)
        for label, kw in (
            ("joints only", dict()),
            ("joints + coco17 + blazepose33", dict(keypoints=("coco17", "blazepose33"))),
            ("mesh + keypoints", dict(keypoints=("coco17", "blazepose33"), return_vertices=True)),
        ):
            def fwd():
                with torch.no_grad():
                    model(pose, betas, **kw)

            def fwd_bwd():
                p = pose.clone().requires_grad_(True)
                b = betas.clone().requires_grad_(True)
                out = model(p, b, **kw)
                loss = out.joints.square().sum()
                for k in out.keypoints.values():
                    loss = loss + k.square().sum()
                if out.vertices is not None:
                    loss = loss + out.vertices.square().mean()
                loss.backward()

            print(f"{label:34s} {B:5d} {timed(fwd, args.repeats):11.2f} {timed(fwd_bwd, args.repeats):11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
