"""Held-out probe curves of training runs on one plot (PNG, OpenCV drawing).

    python tools/plot_probe_curves.py runs/device/sampler.json runs/device/uniform.json \\
        --out docs/img/lifter_timesteps.png [--key probe_k4_pa_mpjpe_mm] [--x seconds]

Each JSON is what ``tools/device_train.sh`` brings back (run settings plus ``history``) or a
run directory's ``history.json``; every history row with the key is a point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

COLOURS = [(200, 60, 0), (0, 140, 0), (0, 0, 200), (150, 0, 150)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run JSON files (label = file stem)")
    p.add_argument("--out", required=True)
    p.add_argument("--key", default="probe_k4_pa_mpjpe_mm")
    p.add_argument("--x", choices=["step", "seconds"], default="step",
                   help="horizontal axis: training step, or seconds of training (runs of unequal speed)")
    p.add_argument("--title", default="held-out probe, K = 4 (PA-MPJPE mm) by training step")
    p.add_argument("--batch", type=int, default=4096, help="the runs' batch, for the axis label")
    args = p.parse_args(argv)
    curves = {}
    for path in args.runs:
        data = json.loads(Path(path).read_text())
        history = data["history"] if isinstance(data, dict) else data
        pts = [(r[args.x], r[args.key]) for r in history if args.key in r]
        curves[Path(path).stem] = np.array(pts, float)
    w, h, m = 900, 480, 70
    img = np.full((h, w, 3), 255, np.uint8)
    xs = np.concatenate([c[:, 0] for c in curves.values()])
    ys = np.concatenate([c[:, 1] for c in curves.values()])
    x_lo, x_hi, y_lo, y_hi = 0, xs.max(), np.floor(ys.min() - 0.5), np.ceil(ys.max() + 0.5)
    px = lambda v: int(m + (v - x_lo) / (x_hi - x_lo) * (w - 2 * m))  # noqa: E731
    py = lambda v: int(h - m - (v - y_lo) / (y_hi - y_lo) * (h - 2 * m))  # noqa: E731
    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    for v in np.linspace(y_lo, y_hi, 6):
        cv2.putText(img, f"{v:.1f}", (m - 45, py(v) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for v in np.linspace(0, x_hi, 6):
        cv2.putText(img, f"{v:.0f}", (px(v) - 15, h - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i, (label, c) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = np.stack([[px(x) for x in c[:, 0]], [py(y) for y in c[:, 1]]], -1).astype(np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        cv2.putText(img, f"{label}: {c[0, 1]:.1f} -> {c[-1, 1]:.1f}", (w - m - 260, m + 20 + 20 * i),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    cv2.putText(img, args.title, (m, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    x_label = f"training step (batch {args.batch})" if args.x == "step" else f"seconds of training (batch {args.batch})"
    cv2.putText(img, x_label, (w // 2 - 100, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.imwrite(args.out, img)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
