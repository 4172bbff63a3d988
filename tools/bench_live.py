#!/usr/bin/env python3
"""The live-mode target: end-to-end fps and glass-to-output latency on the real clip (paced
at its 30 fps, as a camera) and on the synthetic camera with 1 and 2 people, before and after
the live defaults, interleaved in one run (this machine is shared: compare within a run).

    python tools/bench_live.py [--rounds 2] [--sources clip clip-1 ...] [--json out.json]

"before": the settings live mode used before the live profile (lift K = 4 steps, refinement
2 guided steps with eager torch, float32 denoiser); "fp32": the live defaults but with the
float32 denoiser (what int8 buys); "after": the live defaults (lift K = 1, refinement 1 step,
the denoiser with int8 weights on ONNX Runtime); "unfitted": the live defaults without the
refine stage (what the keypoint fit costs). All run the current code (the source waits
for the models, the detector runs beside the landmarks, the landmark model without its
segmentation head). ``--max-persons 1`` follows one person in the clip (the target's
case); frames of the real clip are also split by how many people they show.

``--before-tree DIR`` adds the variant ``tree``: the live defaults run by the code checked
out in DIR (e.g. ``git worktree add /tmp/before COMMIT``), in a process of its own, in turn
with the others, so a change can be measured against the code before it in one run (every
variant then runs in a process of its own, as the tree's must):

    python tools/bench_live.py --before-tree /tmp/before --variants tree after \
        --sources clip clip-1 synthetic-4 synthetic-8

Before each source's runs in a round the tool times a fixed unit of work on one core, then
on every core at once (:func:`streamer.machine.core_speed`, about three seconds), and prints
how fast each core ran with all of them busy against one alone: on this shared virtual
machine that share moves between about 0.55 and 1.0 within minutes, which the load average
does not show, and runs taken at 0.6 had little more than one core's worth of CPU.

Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamer.app import RunConfig  # noqa: E402
from streamer.bench import bench_once, end_to_end  # noqa: E402
from streamer.machine import core_speed, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "tests" / "data" / "sports2d_demo.mp4"
VARIANTS = {
    "before": dict(lift_steps=4, refine_steps=2, backend="refine=torch", denoiser_precision="fp32"),
    "fp32": dict(denoiser_precision="fp32"),
    "after": dict(),
    "unfitted": dict(refine=False),  # the live defaults without the keypoint fit: what it costs
    "tree": dict(),  # the live defaults of the code in --before-tree
}
SOURCES = {"clip": None, "clip-1": None, "synthetic-1": 1, "synthetic-2": 2, "synthetic-4": 4, "synthetic-8": 8}
MAX_PERSONS = {"clip-1": 1}  # the others follow up to 6 (the default)


def bench_in_tree(tree: str, options: dict, synthetic: int | None, frames: int) -> dict:
    """:func:`streamer.bench.bench_once` of the code checked out in ``tree``, in a process of
    its own (its modules, this interpreter and its packages); the summary it prints."""
    code = ("import json, logging, sys\n"
            "logging.basicConfig(level=logging.WARNING)\n"
            "from streamer.app import RunConfig\n"
            "from streamer.bench import bench_once\n"
            "options, synthetic, frames = json.loads(sys.argv[1])\n"
            "summary = bench_once(RunConfig(**options), synthetic=synthetic, frames=frames, warmup=10)\n"
            "print('SUMMARY ' + json.dumps(summary))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    done = subprocess.run([sys.executable, "-c", code, json.dumps([options, synthetic, frames])], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("SUMMARY ")]
    if done.returncode or not lines:
        raise SystemExit(f"bench in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("SUMMARY "):])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--frames", type=int, default=230, help="synthetic frames per run (default 230, as the clip)")
    p.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--json", help="write every run's summary here")
    p.add_argument("--before-tree", metavar="DIR", help="a checkout whose code the 'tree' variant runs")
    args = p.parse_args()
    if "tree" in args.variants and not args.before_tree:
        p.error("the 'tree' variant needs --before-tree DIR")
    logging.basicConfig(level=logging.WARNING)
    conditions = machine()
    runs: dict[str, dict[str, list[dict]]] = {}
    speeds: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for src in args.sources:
            # The cores' speed before each source's runs: the neighbours of this shared
            # machine slow them for minutes at a time, and only this shows it.
            speed = core_speed()
            speeds.setdefault(src, []).append(speed)
            print(f"{src:12s} cores  each at {speed['share']:.2f} of one alone with all busy (a unit of work "
                  f"{speed['unit_ms_p50']:.2f} ms, p90 {speed['unit_ms_p90']:.2f}; alone {speed['unit_ms_alone']:.2f})",
                  flush=True)
            for variant in args.variants:
                options = dict(source=str(CLIP), mode="live", publish=None, progress=False,
                               max_persons=MAX_PERSONS.get(src, 6), **VARIANTS[variant])
                if args.before_tree:
                    # With a tree to compare against, every variant runs in a fresh process of
                    # its own: the process alone moved the p99 (an A/A run of one commit read
                    # 70 ms in its own process against 43 ms in this one; both in their own:
                    # 34.4 and 34.3 ms).
                    tree = args.before_tree if variant == "tree" else str(ROOT)
                    summary = bench_in_tree(tree, options, SOURCES[src], args.frames)
                else:
                    summary = bench_once(RunConfig(**options), synthetic=SOURCES[src], frames=args.frames, warmup=10)
                runs.setdefault(src, {}).setdefault(variant, []).append(summary)
                _, g = end_to_end(summary)
                print(f"{src:12s} {variant:7s} fps {summary['fps'] or 0:5.1f}  p50 {g['p50']:6.1f}  p99 {g['p99']:6.1f} ms  "
                      f"dropped {summary['drops_total']}", flush=True)
    print(f"\n{conditions['cpu']}, {conditions['cores']} cores, load {conditions['load_avg_1min']} at start; "
          f"medians over {args.rounds} round(s)")
    print(f"{'source':12s} {'variant':7s} {'fps':>6s} {'p50 ms':>7s} {'p99 ms':>7s}  stage busy p50 ms (cpu ms/frame)")
    for src, by_variant in runs.items():
        for variant, summaries in by_variant.items():
            med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else None  # noqa: E731
            fps = med([s["fps"] for s in summaries])
            p50 = med([end_to_end(s)[1]["p50"] for s in summaries])
            p99 = med([end_to_end(s)[1]["p99"] for s in summaries])
            stages = ", ".join(
                f"{n} {med([s['stages'][n]['busy_ms']['p50'] for s in summaries]):.1f} "
                f"({med([s['stages'][n]['cpu_ms_per_frame'] for s in summaries]):.1f})"
                for n in summaries[0]["stages"] if n != "grab")
            print(f"{src:12s} {variant:7s} {fps:6.1f} {p50:7.1f} {p99:7.1f}  {stages}")
            if variant == args.variants[0]:
                print(f"{'':12s} {'':7s} each core at {', '.join(format(s['share'], '.2f') for s in speeds[src])} "
                      f"of one alone, per round (streamer.machine.core_speed)")
            if src.startswith("clip"):
                for n in sorted({k for s in summaries for k in s["end_to_end_ms_by_people"]}):
                    rows = [s["end_to_end_ms_by_people"][n] for s in summaries if n in s["end_to_end_ms_by_people"]]
                    print(f"{'':12s} {'':7s} {n} people in frame: {sum(r['frames'] for r in rows)} frames, "
                          f"p50 {med([r['p50'] for r in rows]):.1f}  p99 {med([r['p99'] for r in rows]):.1f} ms "
                          f"(p99 per round: {', '.join(format(r['p99'], '.1f') for r in rows)})")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": conditions, "core_speed": speeds, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
