#!/usr/bin/env python3
"""CPU per person of the live lift and refine stages, for 1, 2, 4 and 8 people.

Feeds the bundled keypoint track of the clip (``tests/data/keypoints/``, the landmark
network's points and world landmarks as the keypoints stage makes them) through the real
:class:`streamer.lift_stage.LiftStage` and :class:`streamer.refine_stage.RefineStage` built
with the live defaults, P copies of the person per frame (each shifted sideways, one track
each), and prints the median thread CPU time per frame of each stage's ``process`` and its
share per person. No pipeline, no threads, no video: what the two stages cost per frame.

    python tools/profile_live_person.py [--persons 1 2 4 8] [--frames 100]
    python tools/profile_live_person.py --persons 2 --profile        # where the time goes
    python tools/profile_live_person.py --persons 2 --parts          # the same, by named step
    python tools/profile_live_person.py --persons 3 --save out.npz   # every published body
    python tools/profile_live_person.py --persons 3 --compare out.npz  # same as a saved run?
    python tools/profile_live_person.py --persons 1 2 --compile-summary  # the lift's summary compiled
    python tools/profile_live_person.py --persons 1 2 --compile-fit --cpp-wrapper  # the fit's linearisation too
    python tools/profile_live_person.py --persons 1 2 --ops              # torch operations a frame
    python tools/profile_live_person.py --persons 1 2 --before-tree /tmp/before --rounds 20  # against older code

``--save`` / ``--compare`` check that a change to the code leaves the results as they were:
save with the old code, compare with the new (max absolute difference of ``poses``,
``betas``, ``trans`` and ``joints`` of every person of every frame; exit status 1 above
``--tolerance``). ``--compile-summary`` runs the lift's summary of its samples
(:meth:`Lifter.summarise`: rotation mean, body model, translation, spread) through
``torch.compile`` (Inductor's C++ code; needs a C++ compiler) and prints the compile time:
how much of the lift's time is the count of small tensor operations rather than their
work; ``--compile-fit`` does the same for the fit's outputs and their Jacobian
(:meth:`KeypointFitter._linearise`, ``_outputs``), and ``--cpp-wrapper`` has Inductor call
its kernels from generated C++ rather than Python. ``--ops`` counts the torch operations a
frame runs (``torch.profiler``; those called from Python, and all with the ones they call
inside): a figure the machine's load does not move, where its CPU time moves by 10-30 %
between runs on this shared machine.
``--before-tree DIR`` (e.g. ``git worktree add /tmp/before COMMIT``) measures the stages of
the code checked out in DIR against this tree's, each run in a process of its own, in turn,
``--rounds`` times, and prints each run's median and 10th percentile of the two stages' CPU
per frame (the lower percentile is what the frame costs when no neighbour took the cache or
the core: it moves less with the load than the median), and their medians over the rounds.
Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRACK = ROOT / "tests" / "data" / "keypoints" / "sports2d_track2_blazepose33.npz"
FIELDS = ("poses", "betas", "trans", "joints")


def build_stages(precision: str | None = None, mode: str = "live"):
    """The live lift and refine stages, as ``run --mode live`` builds them (``precision``:
    the denoiser's, default the live one)."""
    import torch

    from calibration.camera_file import camera_or_assumed
    from engines.body.body_model import BodyModel
    from engines.run_engines import build_lifter, build_refiner
    from engines.run_plan import plan_run
    from streamer.app import RunConfig, link_prior_calls
    from streamer.lift_file import read_keypoint_file
    from streamer.lift_stage import LiftStage
    from streamer.refine_stage import RefineStage

    torch.set_num_threads(1)
    track = read_keypoint_file(TRACK)
    camera, _ = camera_or_assumed(None, *track.image_size)
    plan = plan_run(RunConfig(source="profile", denoiser_precision=precision), mode)
    body = BodyModel.load()
    lift = LiftStage(camera, build_lifter(plan, body))
    refine = RefineStage(camera, build_refiner(plan, body), body)
    link_prior_calls(lift, refine)
    return track, lift, refine


def frame_of(track, index: int, persons: int):
    """Frame ``index`` of the track with ``persons`` copies of its person, each 60 pixels
    further right, track ids 0..P-1."""
    from streamer.frames import Frame, Person

    people = []
    for p in range(persons):
        kp = track.keypoints[index].astype(np.float32).copy()
        kp[:, 0] += 60.0 * p
        people.append(Person(track_id=p, score=1.0, arrays={
            "keypoints_blazepose33": kp, "world_blazepose33": track.world[index].astype(np.float32)}))
    return Frame(index=index, image=None, capture_time=0.0, source_size=tuple(track.image_size), persons=people)


#: The named steps ``--parts`` times: (label, where: "lift" the Lifter, "fit" the
#: KeypointFitter, "body" the fit's body model, "stage" the RefineStage, or a module path,
#: attribute). Indented labels run inside the one above them.
PARTS = (
    ("lift: sampler (ONNX Runtime)", "lift", "_draw"),
    ("lift: condition", "lift", "condition"),
    ("lift: summary of the samples", "lift", "summarise"),
    ("  body model (mean + samples)", "lift", "body"),
    ("  translation", "engines.lifting.lifter", "solve_translation"),
    ("  rotation mean", "engines.lifting.lifter", "rotation_mean"),
    ("  to axis-angle", "engines.lifting.lifter", "matrix_to_axis_angle"),
    ("fit: linearise", "fit", "_linearise"),
    ("  pose Jacobian", "body", "pose_jacobian"),
    ("fit: prior (ONNX Runtime)", "fit", "_prior"),
    ("fit: energy of the step", "fit", "_outputs"),
    ("fit: world term (both)", "engines.refinement.fitting", "add_world_term"),
    ("fit: re-projection term (both)", "engines.refinement.fitting", "add_reprojection_term"),
    ("fit: keypoint noise", "engines.refinement.fitting", "keypoint_noise"),
    ("release", "stage", "_release_persons"),
    ("  re-projection measure", "streamer.refine_stage", "measure_persons"),
)


def time_parts(lift, refine) -> dict[str, float]:
    """Wrap each of :data:`PARTS` in a thread-time counter; the counters (seconds, summed
    over calls), filled as the stages run."""
    import importlib

    owners = {"lift": lift.lifter, "fit": refine.online.refiner, "body": refine.online.refiner.body,
              "stage": refine}
    totals = {label: 0.0 for label, _, _ in PARTS}

    def timed(label, f):
        def wrapper(*a, **k):
            t = time.thread_time()
            try:
                return f(*a, **k)
            finally:
                totals[label] += time.thread_time() - t
        return wrapper

    for label, where, name in PARTS:
        owner = owners.get(where) or importlib.import_module(where)
        setattr(owner, name, timed(label, getattr(owner, name)))
    return totals


def run(persons: int, frames: int, warmup: int, profile: bool, precision: str | None = None, mode: str = "live",
        parts: bool = False, compile_summary: bool = False, ops: bool = False, compile_fit: bool = False):
    """CPU ms per frame of lift and refine (medians over the measured frames), the published
    arrays of every frame, the profile (or None) and the two stages' CPU ms of each measured
    frame. Under inference mode, as the pipeline runs its stages (:mod:`streamer.graph`)."""
    import torch

    with torch.inference_mode():
        return _run(persons, frames, warmup, profile, precision, mode, parts, compile_summary, ops, compile_fit)


def count_ops(prof, frames: int) -> tuple[float, float]:
    """Torch operations per frame in a ``torch.profiler`` trace: those called from Python
    (an ``aten::`` event not inside another) and all of them."""
    top = total = 0
    for e in prof.events():
        if e.name.startswith("aten::"):
            total += 1
            top += e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")
    return top / frames, total / frames


def _run(persons: int, frames: int, warmup: int, profile: bool, precision: str | None, mode: str, parts: bool,
         compile_summary: bool, ops: bool = False, compile_fit: bool = False):
    track, lift, refine = build_stages(precision, mode)
    if compile_summary:
        import torch

        lift.lifter.summarise = torch.compile(lift.lifter.summarise, dynamic=True)
        t = time.perf_counter()
        lift.process(frame_of(track, 0, persons))  # compiles
        lift.lifter = lift.lifter.fresh()  # its draws from the seed again, as without
        print(f"{'':7s} torch.compile of the summary: {time.perf_counter() - t:.1f} s on the first frame")
    if compile_fit:
        import torch

        # The fit's tensor code of one frame: its outputs, and their Jacobian (the body
        # model's pose Jacobian and the lens), one graph per count of free frames. Compiled
        # on a first frame through stages of their own, so that these start unchanged.
        fitter = refine.online.refiner
        fitter._linearise = torch.compile(fitter._linearise, dynamic=False)
        fitter._outputs = torch.compile(fitter._outputs, dynamic=False)
        _, lift_first, refine_first = build_stages(precision, mode)
        refine_first.online.refiner._linearise, refine_first.online.refiner._outputs = fitter._linearise, fitter._outputs
        t = time.perf_counter()
        refine_first.process(lift_first.process(frame_of(track, 0, persons)))  # compiles
        print(f"{'':7s} torch.compile of the fit's linearisation: {time.perf_counter() - t:.1f} s on the first frame")
    lift.start()
    refine.start()
    totals = time_parts(lift, refine) if parts else None
    lift_cpu, refine_cpu = [], []
    published: dict[str, list[np.ndarray]] = {k: [] for k in FIELDS}
    prof = cProfile.Profile(time.thread_time) if profile else None
    frames = min(frames, len(track.keypoints))
    tracer = None
    if ops:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        tracer = torch_profile(activities=[ProfilerActivity.CPU])

    def collect(out):
        for person in out.persons:
            for k in FIELDS:
                published[k].append(person.arrays[k])

    for i in range(frames):
        frame = frame_of(track, i, persons)
        on = prof is not None and i >= warmup
        if totals is not None and i == warmup:
            totals.update(dict.fromkeys(totals, 0.0))
        if on:
            prof.enable()
        if tracer is not None and i == warmup:
            tracer.start()
        c0 = time.thread_time()
        frame = lift.process(frame)
        c1 = time.thread_time()
        out = refine.process(frame)
        c2 = time.thread_time()
        if on:
            prof.disable()
        if i >= warmup:
            lift_cpu.append(c1 - c0)
            refine_cpu.append(c2 - c1)
        if out is not None:
            collect(out)
    if tracer is not None:
        tracer.stop()
        called, every = count_ops(tracer, max(frames - warmup, 1))
        print(f"{'':7s} torch operations a frame: {called:.0f} called from Python, {every:.0f} with those inside them "
              f"(times above are with the profiler on)")
    for out in refine.finish():
        collect(out)
    arrays = {k: np.stack(v) for k, v in published.items()}
    if totals is not None:
        measured = max(frames - warmup, 1)
        print(f"{'':7s} mean thread CPU ms per frame of each step (mean lift {1000 * statistics.mean(lift_cpu):.2f}, "
              f"refine {1000 * statistics.mean(refine_cpu):.2f}):")
        for label, total in totals.items():
            print(f"{'':9s}{label:36s} {1000 * total / measured:6.3f}")
    frame_ms = [1000 * (a + b) for a, b in zip(lift_cpu, refine_cpu)]
    return 1000 * statistics.median(lift_cpu), 1000 * statistics.median(refine_cpu), arrays, prof, frame_ms


def against_tree(tree: str, persons: list[int], rounds: int, frames: int) -> int:
    """``--before-tree``: this tool in a process of its own per run, on ``tree``'s stages and
    on this tree's, in turn; per run the median and 10th percentile of lift + refine CPU per
    frame; their medians over the rounds and how often this tree's was the lower."""
    import subprocess

    def one(n: int, other: str | None) -> dict:
        cmd = [sys.executable, __file__, "--persons", str(n), "--frames", str(frames), "--json"]
        out = subprocess.run(cmd + (["--tree", other] if other else []), capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    runs: dict[tuple[int, str], list[dict]] = {}
    print(f"{'round':>5} {'persons':>7} {'tree':>7}  lift + refine CPU ms per frame: p50 (p10)")
    for r in range(rounds):
        for n in persons:
            for name, other in (("before", tree), ("this", None)):
                m = one(n, other)
                runs.setdefault((n, name), []).append(m)
                print(f"{r + 1:5d} {n:7d} {name:>7}  {m['p50']:6.2f} ({m['p10']:.2f})", flush=True)
    print(f"\n{'persons':>7}  medians over {rounds} rounds, ms per frame (per person)")
    for n in persons:
        b, a = runs[(n, "before")], runs[(n, "this")]
        lower = {q: sum(x[q] < y[q] for x, y in zip(a, b)) for q in ("p50", "p10")}
        med = {k: {q: statistics.median(x[q] for x in v) for q in ("p50", "p10")} for k, v in (("before", b), ("this", a))}
        print(f"{n:7d}  p50 {med['before']['p50']:.2f} -> {med['this']['p50']:.2f} ({med['this']['p50'] / n:.2f} per person; "
              f"lower in {lower['p50']} of {rounds}), p10 {med['before']['p10']:.2f} -> {med['this']['p10']:.2f} "
              f"(lower in {lower['p10']} of {rounds})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--persons", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="print a thread-time profile of both stages")
    p.add_argument("--parts", action="store_true", help="time the named steps of both stages (PARTS)")
    p.add_argument("--save", help="write the published arrays (one --persons value) to this .npz")
    p.add_argument("--compare", help="compare the published arrays with this .npz (from --save)")
    p.add_argument("--precision", choices=("fp32", "int8"),
                   help="the denoiser's weights (default: live mode's, int8). int8 quantises each call's "
                        "activations, so a rounding-level change of its input can move its output by a "
                        "quantisation step: compare code changes with fp32")
    p.add_argument("--mode", choices=("live", "offline"), default="live",
                   help="the mode whose defaults the stages take (offline: K = 4, lag 5, two iterations, fp32)")
    p.add_argument("--compile-summary", action="store_true",
                   help="run the lift's summary of its samples (Lifter.summarise) through torch.compile")
    p.add_argument("--compile-fit", action="store_true",
                   help="run the fit's outputs and their Jacobian (KeypointFitter._linearise, _outputs) "
                        "through torch.compile")
    p.add_argument("--cpp-wrapper", action="store_true",
                   help="with --compile-*: Inductor calls its kernels from generated C++, not Python")
    p.add_argument("--ops", action="store_true", help="count the torch operations a frame runs (torch.profiler)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest difference --compare accepts")
    p.add_argument("--before-tree", metavar="DIR", help="measure the code checked out in DIR against this tree's, in turn")
    p.add_argument("--rounds", type=int, default=10, help="with --before-tree: rounds of runs")
    p.add_argument("--tree", metavar="DIR", help=argparse.SUPPRESS)  # the stages of another checkout
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one run's figures, one line
    args = p.parse_args()
    if args.before_tree:
        return against_tree(args.before_tree, args.persons, args.rounds, args.frames)
    if args.tree:
        sys.path.insert(0, str(Path(args.tree).resolve()))
    if args.json:
        lift_ms, refine_ms, _, _, frame_ms = run(args.persons[0], args.frames, args.warmup, False, args.precision,
                                                 args.mode)
        frame = np.array(frame_ms)
        print(json.dumps({"persons": args.persons[0], "lift_ms": lift_ms, "refine_ms": refine_ms,
                          "p50": float(np.percentile(frame, 50)), "p10": float(np.percentile(frame, 10))}))
        return 0
    if (args.save or args.compare) and len(args.persons) != 1:
        p.error("--save and --compare take one --persons value")
    if args.cpp_wrapper and not (args.compile_summary or args.compile_fit):
        p.error("--cpp-wrapper changes how compiled code runs: give it with --compile-summary or --compile-fit")
    if args.cpp_wrapper:
        import torch._inductor.config

        torch._inductor.config.cpp_wrapper = True
    if (args.compile_summary or args.compile_fit) and args.parts:
        # The step timers wrap functions the compiled code calls: it recompiles on them and
        # the figures are the timers', not the compiled code's.
        p.error("--compile-summary and --compile-fit do not combine with --parts")
    print(f"{'persons':>7s} {'lift ms':>8s} {'refine ms':>9s} {'lift/person':>11s} {'refine/person':>13s} "
          f"{'both/person':>11s}   (median thread CPU per frame)")
    status = 0
    for n in args.persons:
        lift_ms, refine_ms, arrays, prof, _ = run(n, args.frames, args.warmup, args.profile, args.precision, args.mode, args.parts,
                                                  args.compile_summary, args.ops, args.compile_fit)
        print(f"{n:7d} {lift_ms:8.2f} {refine_ms:9.2f} {lift_ms / n:11.2f} {refine_ms / n:13.2f} "
              f"{(lift_ms + refine_ms) / n:11.2f}", flush=True)
        if prof is not None:
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
            print(s.getvalue())
        if args.save:
            np.savez(args.save, **arrays)
        if args.compare:
            with np.load(args.compare) as ref:
                for k in FIELDS:
                    if ref[k].shape != arrays[k].shape:
                        print(f"{k}: shape {arrays[k].shape}, saved {ref[k].shape}")
                        status = 1
                        continue
                    per_row = np.abs(ref[k] - arrays[k]).reshape(len(ref[k]), -1).max(1)
                    diff = float(per_row.max())
                    over = np.nonzero(per_row > args.tolerance)[0]
                    first = f", first above {args.tolerance:g} at person-frame {over[0]} of {len(per_row)}" if len(over) else ""
                    print(f"{k}: max |difference| {diff:.2e}{first}")
                    status |= diff > args.tolerance
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
