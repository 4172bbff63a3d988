"""Online fixed-lag refinement: per track a ring buffer of its recent frames; every new
frame refines, jointly for all tracks of that frame, the frames not yet emitted, with
already emitted frames as fixed context; the frame ``lag`` behind the newest is then final.

>>> refiner = OnlineRefiner(KeypointFitter(model, body), lag=5, context=4)
>>> refiner.update(step, {track_id: Observation(...)}, camera)   # every frame, in order
>>> refiner.estimate(track_id, step - 5)                         # final once 5 frames behind

``step`` counts the frames the refiner has seen (consecutive integers). A track that misses
more than ``max_gap`` frames starts a new window (no smoothing across a long pause), held to
the shape it had (``WindowBatch.shape``: a person seen again keeps their shape) until the
window has context frames of its own again; a track's frames not seen for ``lag + context +
max_gap`` frames are forgotten, its shape is not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from engines.diffusion.denoiser import BETAS, NUM_BETAS
from engines.run_defaults import REFINE_LAG

from .guided import CameraParams, PriorGuess, WindowBatch


T = TypeVar("T")


class LagBuffer(Generic[T]):
    """What a fixed-lag refiner holds back: each item is released once ``lag`` newer ones have
    arrived (``push`` returns it), and the rest at the end (``flush``), in arrival order. The
    one place the lag's hold-and-flush is written (the refine stage holds frames in one, the
    offline loops step numbers)."""

    def __init__(self, lag: int):
        self.lag = lag
        self._held: deque[T] = deque()

    def push(self, item: T) -> T | None:
        self._held.append(item)
        return self._held.popleft() if len(self._held) > self.lag else None

    def flush(self) -> list[T]:
        out = list(self._held)
        self._held.clear()
        return out


def refine_sequence(online: "OnlineRefiner", steps, observations, camera: CameraParams) -> list:
    """Run ``online`` over a whole sequence offline: at the i-th of ``steps`` it gets
    ``observations(i)`` (track id -> :class:`Observation`); returns track 0's final
    ``(x, trans)`` for every step, in order, each taken once the lag has passed it. Steps
    may skip frames: a gap of more than ``online.max_gap`` starts a new window."""
    steps = list(steps)
    held: LagBuffer[int] = LagBuffer(online.lag)
    out: list = [None] * len(steps)
    for i, step in enumerate(steps):
        if i and step - steps[i - 1] > online.max_gap:
            # A gap closes the track's window: the frames held back are final now, and
            # the refiner forgets them once the new step is far enough past them.
            for j in held.flush():
                out[j] = online.estimate(0, steps[j])
        online.update(step, observations(i), camera)
        if (j := held.push(i)) is not None:
            out[j] = online.estimate(0, steps[j])
    for j in held.flush():
        out[j] = online.estimate(0, steps[j])
    return out


@dataclass
class Observation:
    """A track's per-frame estimate and evidence: ``x`` (154,) 6D rotations + betas,
    ``trans`` (3,), ``cond`` (C,) denoiser condition, ``keypoints`` (33, 3) pixels + conf,
    ``world`` (33, 3) the landmark network's metric landmarks, when there are any; ``views``
    (V, 33, 3) the keypoints in a rig's other cameras (zeros where one does not see them),
    ``views_world`` (V, 33, 3) those cameras' world landmarks of the person (zeros: none)."""

    x: torch.Tensor
    trans: torch.Tensor
    cond: torch.Tensor
    keypoints: torch.Tensor
    world: torch.Tensor | None = None
    views: torch.Tensor | None = None  # (V, 33, 3) keypoints in the rig's other cameras
    views_world: torch.Tensor | None = None  # (V, 33, 3) world landmarks seen from those cameras
    x_std: torch.Tensor | None = None  # (24,) the lift's angular spread per joint (``poses_std``)
    # (t, x_t (154,), x0 (154,)): the fit's first prior prediction, made by the lift in its own
    # network call from this track's estimate then (guided.PriorGuess); None: none made
    prior: tuple[int, torch.Tensor, torch.Tensor] | None = None


@dataclass
class _Entry:
    step: int
    obs: Observation
    x: torch.Tensor
    trans: torch.Tensor
    # The fitted body at (x, trans) when the refiner posed it (KeypointFitter): its joints
    # (24, 3) and BlazePose-33 points (33, 3), camera frame; None until then.
    joints: torch.Tensor | None = None
    points: torch.Tensor | None = None


class OnlineRefiner:
    """Fixed-lag refinement of many tracks; ``lag`` L frames (0: causal), ``context`` already
    emitted frames kept as fixed context in each window (window = context + L + 1).
    ``refiner`` is a :class:`~engines.refinement.fitting.KeypointFitter` or a
    :class:`~engines.refinement.guided.GuidedRefiner` (anything with ``refine(WindowBatch,
    CameraParams) -> (x, trans)``)."""

    def __init__(self, refiner, *, lag: int = REFINE_LAG["offline"], context: int = 4, max_gap: int = 1, warm_start: bool = True):
        if lag < 0 or context < 0 or max_gap < 1:
            raise ValueError("OnlineRefiner: lag and context must be >= 0, max_gap >= 1")
        self.refiner = refiner
        # A new frame of a continuing track starts from the previous frame's estimate (moved
        # by the lift's own frame-to-frame translation): a few iterations then finish it.
        self.warm_start = warm_start
        # Each track's newest fitted shape, and the shape a track back after a gap is held to
        # until its window has context frames again (which then carry the shape on).
        self._shapes: dict[int, torch.Tensor] = {}
        self._held_shape: dict[int, torch.Tensor] = {}
        self.lag = lag
        self.context = context
        self.max_gap = max_gap
        self.window = context + lag + 1
        self.tracks: dict[int, deque[_Entry]] = {}
        # Every held frame by (track, step), also those of a window closed by a pause, so
        # frames still waiting to be emitted are found after their track restarted.
        self._held: dict[tuple[int, int], _Entry] = {}
        self.last_step: int | None = None

    def update(self, step: int, observations: dict[int, Observation], camera: CameraParams, *,
               fit: bool = True) -> None:
        """Add frame ``step``'s observations (track id -> :class:`Observation`) and refine the
        open windows of those tracks in one batch. ``fit=False`` adds them as they are (the
        frame's estimates are its observations) without refining: live mode's way to catch up
        on a late frame while the windows stay unbroken."""
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"OnlineRefiner.update: steps must increase (got {step} after {self.last_step})")
        self.last_step = step
        for tid, obs in observations.items():
            buf = self.tracks.get(tid)
            if buf is None or step - buf[-1].step > self.max_gap:
                buf = self.tracks[tid] = deque(maxlen=self.window)
                if tid in self._shapes:
                    self._held_shape[tid] = self._shapes[tid]
            if self.warm_start and buf and fit:
                prev = buf[-1]
                entry = _Entry(step, obs, prev.x.clone(), prev.trans + (obs.trans - prev.obs.trans))
            else:
                entry = _Entry(step, obs, obs.x.clone(), obs.trans.clone())
                if not buf and tid in self._held_shape:
                    entry.x[BETAS] = self._held_shape[tid]
            buf.append(entry)
            self._held[(tid, step)] = entry
        forget = self.window + self.max_gap
        for tid in [t for t, b in self.tracks.items() if step - b[-1].step > forget]:
            del self.tracks[tid]
        for key in [k for k in self._held if step - k[1] > forget]:
            del self._held[key]
        ids = [tid for tid in observations]
        if ids and fit:
            self._refine(ids, step, camera)

    def estimate(self, track_id: int, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The current ``(x, trans)`` of a track at ``step`` (final once ``step`` is ``lag``
        behind the newest), or None when the refiner does not hold it (any more)."""
        e = self._held.get((track_id, step))
        return None if e is None else (e.x, e.trans)

    def next_start(self, track_id: int) -> torch.Tensor | None:
        """The estimate (154,) the next frame's fit of ``track_id`` starts from when that frame
        continues the track (a warm start from its newest frame), read before the frame's
        :meth:`update`: the live lift prepares the fit's first prior call with it. None
        where the next fit would start from the frame's own lift. Read from another thread,
        it may be one frame old; the fit then sees that the prepared input is not its own."""
        if not self.warm_start or self.last_step is None:
            return None
        buf = self.tracks.get(track_id)
        if not buf or self.last_step + 1 - buf[-1].step > self.max_gap:
            return None
        return buf[-1].x

    def body(self, track_id: int, step: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The joints (24, 3) and BlazePose-33 points (33, 3), camera frame, of the body
        :meth:`estimate` gives, as the fit posed it; None where it did not (a frame added
        without a fit, or a refiner that does not say)."""
        e = self._held.get((track_id, step))
        return None if e is None or e.joints is None else (e.joints, e.points)

    @staticmethod
    def _prior_guess(entries: list, free_rows: list[list[bool]], stacked) -> PriorGuess | None:
        """The free frames' prepared prior predictions (Observation.prior), as the batch's."""
        flags = [f for row in free_rows for f in row]
        made = [e.obs.prior for e, f in zip(entries, flags) if f and e is not None and e.obs.prior is not None]
        if not made:
            return None
        t = made[0][0]

        def part(k):
            return stacked(lambda e: e.obs.prior[k] if e.obs.prior is not None and e.obs.prior[0] == t else None,
                           made[0][k])

        return PriorGuess(t, part(1), part(2))

    def _refine(self, ids: list[int], step: int, camera: CameraParams) -> None:
        bufs = [self.tracks[t] for t in ids]
        T = max(len(b) for b in bufs)
        S = len(bufs)
        # Right-aligned: the newest frame of every window is in the last column; padding
        # (None) in front of a shorter window. Each field is stacked in one call: per-element
        # copies were hundreds of small tensor operations per frame with several people.
        slots = [[None] * (T - len(b)) + list(b) for b in bufs]
        entries = [e for row in slots for e in row]

        def stacked(get, like: torch.Tensor | None = None) -> torch.Tensor | None:
            values = [None if e is None else get(e) for e in entries]
            like = like if like is not None else next((v for v in values if v is not None), None)
            if like is None:
                return None
            zero = torch.zeros_like(like)
            return torch.stack([zero if v is None else v for v in values]).view(S, T, *like.shape)

        first = bufs[0][0].obs
        x = stacked(lambda e: e.x, first.x)
        trans = stacked(lambda e: e.trans, first.trans)
        cond = stacked(lambda e: e.obs.cond, first.cond)
        kp = stacked(lambda e: e.obs.keypoints, first.keypoints)
        x_obs = stacked(lambda e: e.obs.x, first.x)
        world = stacked(lambda e: e.obs.world)
        views = stacked(lambda e: e.obs.views)
        views_world = stacked(lambda e: e.obs.views_world)
        valid = torch.tensor([[e is not None for e in row] for row in slots], dtype=torch.bool).view(S, T)
        free_rows = [[e is not None and e.step >= step - self.lag for e in row] for row in slots]
        free = torch.tensor(free_rows, dtype=torch.bool).view(S, T)
        x_std = stacked(lambda e: e.obs.x_std)
        settled = [any(e is not None and not f for e, f in zip(row, flags)) for row, flags in zip(slots, free_rows)]
        for tid, has_context in zip(ids, settled):
            if has_context:
                self._held_shape.pop(tid, None)  # context frames of its own carry the shape on
        shape = None
        if any(t in self._held_shape for t in ids):
            nan = torch.full((NUM_BETAS,), float("nan"))
            shape = torch.stack([self._held_shape.get(t, nan) for t in ids])
        batch = WindowBatch(x, trans, cond, kp, valid, free, x_obs, world, views, views_world, x_std=x_std, shape=shape,
                            prior=self._prior_guess(entries, free_rows, stacked))
        if not hasattr(self.refiner, "refine_bodies"):
            x_new, trans_new = self.refiner.refine(batch, camera)
            joints_new = points_new = None
        else:
            # The context frames' joints as their last fit posed them (free frames are posed
            # by the fit itself), when every one has them.
            context = [e for row, flags in zip(slots, free_rows) for e, f in zip(row, flags) if e is not None and not f]
            if all(e.joints is not None for e in context):
                batch.joints = stacked(lambda e: e.joints, first.x.new_zeros(24, 3))
            x_new, trans_new, joints_new, points_new = self.refiner.refine_bodies(batch, camera)
        for i, row in enumerate(slots):
            for j, e in enumerate(row):
                if free_rows[i][j]:
                    e.x, e.trans = x_new[i, j], trans_new[i, j]
                    if joints_new is not None:
                        e.joints, e.points = joints_new[i, j], points_new[i, j]
            if settled[i]:
                # Remembered once the track has been followed past a whole window: a shape
                # fitted on a frame or two is not yet one to hold a person to.
                self._shapes[ids[i]] = row[-1].x[BETAS].clone()
