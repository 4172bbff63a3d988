"""Multi-person tracking: stable integer ids for boxes across frames.

`Tracker.update(detections) -> list[Track]`, in the manner of norfair. Each track
keeps a constant-velocity Kalman filter (filterpy) on its box centre and size;
detections are assigned to the predicted boxes with the Hungarian method
(scipy) on an IoU cost, in two passes as ByteTrack does: confident detections
first against every track (live and recently lost), then the weak ones against
the live tracks left over, so a person who is briefly poorly seen keeps the id
instead of spawning a new one. Tracks that miss detections are kept, predicted
forward, for `max_lost` frames so a person who is hidden for a moment gets the
same id back. After that a track stays dormant for `dormant_frames` more (a few seconds):
a new person who appears where the dormant one could have got to by then (at a run's
speed), at a plausible size and not dressed differently (`appearance`, when detections carry
one) takes its id instead of a new one. Two tracks are never merged: only a detection that
would start a new track can wake a dormant one.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
from filterpy.kalman import KalmanFilter
from scipy.optimize import linear_sum_assignment

from engines.perception.appearance import appearance_distance, blend_appearance
from engines.perception.boxes import iou_matrix

log = logging.getLogger("engines.perception.tracking")


class Detected(Protocol):
    """What the tracker needs from a detection: a box and a score."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 in pixels
    score: float


# Re-identification by distance after several unseen frames (Tracker, pass 3): a walking
# person covers about 0.8 body heights per second, 0.03 per frame at 30 fps.
REID_MIN_FRAMES = 5
REID_SPEED = 0.03
REID_MAX_HEIGHTS = 2.0
# Waking a dormant track (pass 4): a running or jumping person covers up to ~2.4 body
# heights a second (0.08 a frame at 30 fps); a crouch or a landing may leave a box whose
# longer side is a quarter of the standing height (the clip's backflip: 0.34 offline, 0.2 of
# the height alone in live runs). Clothing colours further apart than REID_MAX_APPEARANCE (above the
# 95th percentile of one person's own distances in the bundled clip's backlight, 0.35-0.54:
# engines.perception.appearance) are someone else's.
REID_RUN_SPEED = 0.08
REID_DORMANT_MAX_HEIGHTS = 3.0
REID_SIZE_RANGE = (0.25, 2.0)
REID_MAX_APPEARANCE = 0.55
# A followed person's appearance model takes in every few frames' colours, not every frame's
# (clothing does not change; the descriptor costs about 0.4 ms a person at 1768x994).
APPEARANCE_EVERY = 5


class TrackState(enum.Enum):
    TENTATIVE = "tentative"  # seen, not yet confirmed by enough consecutive hits
    CONFIRMED = "confirmed"  # matched in the latest frame
    LOST = "lost"  # not matched lately; kept (predicted) for re-identification


def box_to_z(box: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


def z_to_box(z: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    cx, cy, w, h = z[:4]
    w, h = max(w, 1e-3), max(h, 1e-3)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


@dataclass(eq=False)
class Track:
    """One tracked person.

    `box` is the latest matched detection's box when the track was matched this
    frame, else the Kalman prediction. `detection` is the latest matched
    detection object (whatever the caller passed, e.g. with keypoints).
    """

    id: int
    box: np.ndarray
    score: float
    detection: Any
    state: TrackState
    hits: int = 1  # consecutive matched frames
    age: int = 1  # frames since creation
    time_since_update: int = 0  # updates since the last match
    frames_unseen: int = 0  # source frames since the last match (counts skipped frames too)
    kf: KalmanFilter = field(repr=False, default=None)  # type: ignore[assignment]
    last_seen: np.ndarray | None = None  # the box of the last match
    height: float = 0.0  # the person's standing size: the longest side of their recent boxes (px)
    appearance: np.ndarray | None = field(repr=False, default=None)  # blend_appearance of its matches

    @property
    def predicted_box(self) -> np.ndarray:
        """The filter's current box estimate (x1, y1, x2, y2)."""
        return z_to_box(self.kf.x[:4, 0])

    @property
    def velocity(self) -> np.ndarray:
        """Estimated (d cx, d cy, d w, d h) per frame, in pixels."""
        return self.kf.x[4:, 0].copy()


def _gated_assignment(cost: np.ndarray, allowed: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """Hungarian assignment of rows (tracks) to columns (detections) on ``cost``, only where
    ``allowed``; returns (pairs, unmatched columns)."""
    rows, cols = linear_sum_assignment(np.where(allowed, cost, 1e6))
    pairs = [(r, c) for r, c in zip(rows, cols) if allowed[r, c]]
    matched = {c for _, c in pairs}
    return pairs, [j for j in range(cost.shape[1]) if j not in matched]


def _make_filter(z: np.ndarray) -> KalmanFilter:
    # State: cx, cy, w, h and their per-frame velocities; measurement: cx, cy, w, h.
    kf = KalmanFilter(dim_x=8, dim_z=4)
    kf.F = np.eye(8)
    kf.F[:4, 4:] = np.eye(4)
    kf.H = np.eye(4, 8)
    kf.x[:4, 0] = z
    size = max(z[2], z[3])
    # Uncertainties scale with the box size, as ByteTrack/DeepSORT do, so one
    # tuning serves near and far people.
    kf.P = np.diag(np.square(np.r_[0.1 * size * np.ones(4), 0.1 * size * np.ones(4)]))
    kf.R = np.diag(np.square(0.05 * size * np.ones(4)))
    return kf


def _set_process_noise(kf: KalmanFilter) -> None:
    size = max(float(kf.x[2, 0]), float(kf.x[3, 0]), 1.0)
    q_pos, q_vel = 0.05 * size, 0.01 * size
    kf.Q = np.diag(np.square([q_pos] * 4 + [q_vel] * 4))
    kf.R = np.diag(np.square(0.05 * size * np.ones(4)))


class Tracker:
    """ByteTrack-style multi-object tracker on boxes.

    Args:
        high_score: detections at or above this score are matched first and may
            start new tracks.
        low_score: detections below this are ignored; those between `low_score`
            and `high_score` only extend live tracks (second pass).
        match_iou: minimum IoU between a predicted box and a detection for the
            first (confident) pass.
        low_match_iou: minimum IoU for the second (weak detections) pass.
        max_lost: frames a track is kept (predicted) without a match.
        min_hits: consecutive matches before a new track is reported (the first
            frame's tracks are reported at once).
        dormant_frames: source frames a lost track is kept after that, to be woken by a
            new person who could be it (0: dropped after `max_lost`).
    """

    def __init__(
        self,
        high_score: float = 0.5,
        low_score: float = 0.1,
        match_iou: float = 0.2,
        low_match_iou: float = 0.4,
        max_lost: int = 30,
        min_hits: int = 2,
        dormant_frames: int = 0,
    ) -> None:
        if not 0.0 <= low_score <= high_score <= 1.0:
            raise ValueError(
                f"Tracker: need 0 <= low_score <= high_score <= 1, got {low_score}, {high_score}"
            )
        self.high_score = high_score
        self.low_score = low_score
        self.match_iou = match_iou
        self.low_match_iou = low_match_iou
        self.max_lost = max_lost
        self.min_hits = min_hits
        self.dormant_frames = max(0, int(dormant_frames))
        self.frame_count = 0
        self._next_id = 1
        self._tracks: list[Track] = []

    @property
    def tracks(self) -> list[Track]:
        """Every track held (tentative, confirmed and lost)."""
        return list(self._tracks)

    def reset(self) -> None:
        """Forget all tracks; ids start again from 1."""
        self.frame_count = 0
        self._next_id = 1
        self._tracks = []

    def _match(
        self, tracks: list[Track], dets: list[Detected], min_iou: float
    ) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        """Hungarian assignment on 1 - IoU; returns (pairs, unmatched tracks, unmatched dets)."""
        if not tracks or not dets:
            return [], list(range(len(tracks))), list(range(len(dets)))
        iou = iou_matrix(
            np.stack([t.predicted_box for t in tracks]), np.stack([np.asarray(d.box) for d in dets])
        )
        rows, cols = linear_sum_assignment(1.0 - iou)
        pairs = [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
        matched_t = {r for r, _ in pairs}
        matched_d = {c for _, c in pairs}
        return (
            pairs,
            [i for i in range(len(tracks)) if i not in matched_t],
            [j for j in range(len(dets)) if j not in matched_d],
        )

    def _match_by_distance(self, tracks: list[Track], dets: list[Detected]
                           ) -> tuple[list[tuple[int, int]], list[int]]:
        """Hungarian assignment on centre distance in units of the track's box height, gated
        by how far the person could have walked; returns (pairs, unmatched detections)."""
        t_z = np.stack([box_to_z(t.predicted_box) for t in tracks])
        d_z = np.stack([box_to_z(np.asarray(d.box)) for d in dets])
        height = np.maximum(t_z[:, 3:4], 1.0)
        dist = np.linalg.norm(t_z[:, None, :2] - d_z[None, :, :2], axis=2) / height
        reach = np.array([min(REID_MAX_HEIGHTS, 0.3 + REID_SPEED * t.frames_unseen) for t in tracks])
        ratio = d_z[None, :, 3] / height
        allowed = (dist <= reach[:, None]) & (ratio > 0.67) & (ratio < 1.5)
        return _gated_assignment(dist, allowed)

    def _wake(self, tracks: list[Track], dets: list[Detected]) -> tuple[list[tuple[int, int]], list[int]]:
        """Hungarian assignment of new detections to lost and dormant tracks, from where each
        was last seen: within how far a running person gets in the frames unseen, at a
        plausible size, and not dressed differently. Returns (pairs, unmatched detections)."""
        last = np.stack([box_to_z(t.last_seen) for t in tracks])
        d_z = np.stack([box_to_z(np.asarray(d.box)) for d in dets])
        height = np.array([max(t.height, 1.0) for t in tracks])[:, None]
        dist = np.linalg.norm(last[:, None, :2] - d_z[None, :, :2], axis=2) / height
        reach = np.array([min(REID_DORMANT_MAX_HEIGHTS, 0.5 + REID_RUN_SPEED * t.frames_unseen) for t in tracks])
        ratio = np.maximum(d_z[None, :, 2], d_z[None, :, 3]) / height  # longer sides: a crouch keeps its width
        look = np.array([[appearance_distance(t.appearance, getattr(d, "appearance", None)) for d in dets]
                         for t in tracks])
        unlike = np.nan_to_num(look, nan=0.0) > REID_MAX_APPEARANCE
        allowed = (dist <= reach[:, None]) & (ratio >= REID_SIZE_RANGE[0]) & (ratio <= REID_SIZE_RANGE[1]) & ~unlike
        pairs, unmatched = _gated_assignment(dist / REID_DORMANT_MAX_HEIGHTS + np.nan_to_num(look, nan=REID_MAX_APPEARANCE),
                                             allowed)
        if log.isEnabledFor(logging.DEBUG):
            for i, t in enumerate(tracks):
                for j in range(len(dets)):
                    log.debug("wake track %d? %s: %.2f heights (reach %.2f), size %.2f, colours %.2f", t.id,
                              "yes" if (i, j) in pairs else "no", dist[i, j], reach[i], ratio[i, j], look[i, j])
        return pairs, unmatched

    def _apply(self, track: Track, det: Detected) -> None:
        box = np.asarray(det.box, dtype=np.float64)
        if track.time_since_update > self.max_lost:
            # Woken from dormancy: the filter starts again where the person is now.
            track.kf = _make_filter(box_to_z(box))
        else:
            track.kf.update(box_to_z(box))
        track.box = box.copy()
        track.last_seen = box.copy()
        # The standing size, slowly forgotten: a crouch or a flip does not shrink it.
        track.height = max(0.98 * track.height, float(max(box[2] - box[0], box[3] - box[1])))
        if track.appearance is None or track.age % APPEARANCE_EVERY == 0:
            track.appearance = blend_appearance(track.appearance, getattr(det, "appearance", None))
        track.score = float(det.score)
        track.detection = det
        # time_since_update is 1 here for a track matched in the previous frame.
        track.hits = track.hits + 1 if track.time_since_update <= 1 else 1
        track.time_since_update = 0
        track.frames_unseen = 0
        if track.state == TrackState.LOST or track.hits >= self.min_hits or self.frame_count == 1:
            track.state = TrackState.CONFIRMED

    def update(self, detections: Sequence[Detected], steps: int = 1) -> list[Track]:
        """Advance one frame with this frame's detections.

        Args:
            detections: objects with `.box` ((4,) x1, y1, x2, y2 pixels) and
                `.score` (0..1). May be empty (the tracks are then predicted).
            steps: source frames since the previous update (more than 1 when
                frames were dropped or a stream came back after a gap): the
                tracks are predicted that far ahead (at most `max_lost` frames),
                so a person who kept walking is still matched. Losing and
                dropping tracks still counts updates, not frames.

        Returns:
            The confirmed tracks matched in this frame, ordered by id. Each
            carries its matched detection in `.detection`.
        """
        self.frame_count += 1
        for det in detections:
            b = np.asarray(det.box, dtype=np.float64)
            if b.shape != (4,) or not np.all(np.isfinite(b)) or b[2] <= b[0] or b[3] <= b[1]:
                raise ValueError(f"Tracker.update: detection box must be finite (x1, y1, x2, y2) with x2>x1, y2>y1; got {b}")
        ahead = min(max(1, int(steps)), self.max_lost)
        for t in self._tracks:
            if t.time_since_update < self.max_lost:
                _set_process_noise(t.kf)
                for _ in range(ahead):
                    t.kf.predict()
            t.age += 1
            t.time_since_update += 1
            t.frames_unseen += max(1, int(steps))

        high = [d for d in detections if d.score >= self.high_score]
        low = [d for d in detections if self.low_score <= d.score < self.high_score]

        # Pass 1: confident detections against the predicted tracks (live and lost, not dormant).
        predicted = [t for t in self._tracks if t.time_since_update <= self.max_lost]
        pairs, un_t, un_d = self._match(predicted, high, self.match_iou)
        for ti, di in pairs:
            self._apply(predicted[ti], high[di])
        # Pass 2: weak detections only extend tracks that were live last frame.
        remaining = [predicted[i] for i in un_t if predicted[i].state != TrackState.LOST]
        pairs2, _, _ = self._match(remaining, low, self.low_match_iou)
        for ti, di in pairs2:
            self._apply(remaining[ti], low[di])
        # Pass 3: a person unseen for several frames (a stream's reconnect gap, a long
        # occlusion) may have moved off the constant-velocity prediction: match confident
        # detections left over to lost tracks by distance, within how far a walking person
        # gets in the frames unseen (REID_SPEED body heights per frame), similar size only.
        lost = [predicted[i] for i in un_t if predicted[i].state != TrackState.TENTATIVE
                and predicted[i].time_since_update > 0 and predicted[i].frames_unseen >= REID_MIN_FRAMES]
        if lost and un_d:
            pairs3, still = self._match_by_distance(lost, [high[j] for j in un_d])
            for ti, dj in pairs3:
                self._apply(lost[ti], high[un_d[dj]])
            un_d = [un_d[j] for j in still]

        # Pass 4: a new person who could be a dormant (or lost) one takes its id.
        if un_d:
            waking = [t for t in self._tracks if t.state == TrackState.LOST and t.last_seen is not None
                      and t.time_since_update > 0 and t.frames_unseen >= REID_MIN_FRAMES]
            if waking:
                pairs4, still = self._wake(waking, [high[j] for j in un_d])
                for ti, dj in pairs4:
                    self._apply(waking[ti], high[un_d[dj]])
                un_d = [un_d[j] for j in still]

        for t in self._tracks:
            if t.time_since_update > 0:
                # Unconfirmed tracks that miss are noise; confirmed ones go lost.
                if t.state != TrackState.TENTATIVE and t.state != TrackState.LOST:
                    t.state = TrackState.LOST
                    t.kf.x[6:8] = 0.0  # a lost person keeps their size while predicted
                t.box = t.predicted_box
        self._tracks = [
            t
            for t in self._tracks
            if not (t.state == TrackState.TENTATIVE and t.time_since_update > 0)
            and (t.time_since_update <= self.max_lost or t.frames_unseen <= self.max_lost + self.dormant_frames)
        ]

        for di in un_d:
            det = high[di]
            box = np.asarray(det.box, dtype=np.float64)
            t = Track(
                id=self._next_id,
                box=box.copy(),
                score=float(det.score),
                detection=det,
                state=TrackState.CONFIRMED if self.frame_count == 1 or self.min_hits <= 1 else TrackState.TENTATIVE,
                kf=_make_filter(box_to_z(box)),
                last_seen=box.copy(),
                height=float(max(box[2] - box[0], box[3] - box[1])),
                appearance=blend_appearance(None, getattr(det, "appearance", None)),
            )
            self._next_id += 1
            self._tracks.append(t)

        return sorted(
            (t for t in self._tracks if t.state == TrackState.CONFIRMED and t.time_since_update == 0),
            key=lambda t: t.id,
        )
