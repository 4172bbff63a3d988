"""People matched across the calibrated cameras of a rig: which person of each other view is
which person of the reference view.

Two views of one person agree with the rig's geometry: each keypoint in one view lies on the
epipolar line of the same keypoint in the other (``x_v^T E x_ref = 0``, ``E = [t]x R`` for a
view at ``X_v = R X_ref + t``). The cost of a pair is the symmetric epipolar distance of the
keypoints both views see with confidence, each side divided by the person's size in that
view (so near and far people, wide and narrow lenses are judged alike), averaged over the
shared keypoints. Every other view is matched to the reference view by the Hungarian
assignment (``scipy.optimize.linear_sum_assignment``) on that cost, gated: a pair further
apart than ``gate`` is never matched, and a person seen by one camera alone stays unmatched.

Epipolar geometry cannot tell apart two people on one epipolar line (a level rig sees two
people of one height standing where their rays share an epipolar plane nearly alike). Their
*lifts* can: each view's landmark network gives the person's metric 3D landmarks in that
camera's axes, and one person's, turned into the reference camera's axes by the rig's ``R``,
agree with the reference view's; another person's in another pose do not. Given those
landmarks, each pair's cost adds ``lift_weight`` times the mean angle (radians) between their
bones' directions (:func:`lift_cost`; scale-free, so the network's scale does not matter).
The gate stays on the epipolar cost alone: the landmarks break ties between people the
geometry allows, they never make a match the geometry rules out.

Matches are kept over time: a pair matched in the previous frame keeps its match while its
cost stays under the (looser) ``keep_gate``, and its cost is discounted in the assignment,
so a moment of ambiguity (one person passing near another's epipolar line) does not swap
them.

Keypoints are given in *normalised* coordinates (undistorted ``x/z, y/z`` plus confidence:
:meth:`calibration.camera.Camera.normalize_keypoints`), so lenses and distortion are out of
the way before any geometry.

>>> matcher = CrossViewMatcher([(R1, t1), (R2, t2)])          # views 1 and 2 vs the reference
>>> matches = matcher.match({4: kp_ref_4, 7: kp_ref_7}, [{2: kp_v1}, {}])
>>> matches[0]                                                 # {view-1 track id: reference track id}
{2: 4}
>>> matcher.match(ref, views, reference_landmarks={4: lm_4, 7: lm_7}, view_landmarks=[{2: lm_v1}, {}])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

#: A keypoint counts when its confidence is above this.
MIN_CONFIDENCE = 0.3
#: Pairs sharing fewer confident keypoints than this are not compared.
MIN_SHARED = 6
#: Mean symmetric epipolar distance, in person sizes, above which two detections are not one
#: person. A detector's noise is a few hundredths of the size; people side by side are tenths
#: to whole sizes apart.
GATE = 0.08
#: A pair matched in the last frame keeps its match up to this cost ...
KEEP_GATE = 0.15
#: ... and its cost is multiplied by this in the assignment (prefers the previous match).
KEEP_DISCOUNT = 0.5
#: Assignment cost of one radian of mean bone-direction disagreement between two people's
#: lifts: a limb pointing another way (a right angle) on a third of the bones moves the cost
#: by about 0.026, a third of the gate: enough to decide between pairs the geometry finds
#: about equal, not enough to overrule it.
LIFT_WEIGHT = 0.05
#: Bones compared by :func:`lift_cost` (BlazePose-33 indices): upper arms, forearms, thighs,
#: shins, shoulders, hips, the torso's sides.
BONES = ((11, 13), (13, 15), (12, 14), (14, 16), (23, 25), (25, 27), (24, 26), (26, 28), (11, 12), (23, 24),
         (11, 23), (12, 24))
#: Pairs sharing fewer confident bones than this get no lift cost (nothing to compare).
MIN_BONES = 4


def skew(v: np.ndarray) -> np.ndarray:
    """The cross-product matrix of ``v`` (3,): ``skew(v) @ w == np.cross(v, w)``."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def essential_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``E`` (3, 3) of a view at ``X_view = R X_ref + t``: ``x_view^T E x_ref = 0`` for the
    normalised homogeneous images of one point."""
    return skew(np.asarray(t, np.float64).reshape(3)) @ np.asarray(R, np.float64)


def person_size(keypoints: np.ndarray, min_confidence: float = MIN_CONFIDENCE) -> np.ndarray:
    """Larger side of the box around the confident keypoints, per person: (...,) from (..., J, 3)."""
    ok = keypoints[..., 2] > min_confidence
    xy = keypoints[..., :2]
    lo = np.where(ok[..., None], xy, np.inf).min(-2)
    hi = np.where(ok[..., None], xy, -np.inf).max(-2)
    size = (hi - lo).max(-1)
    return np.where(ok.sum(-1) >= 2, size, np.nan)


def epipolar_cost(ref: np.ndarray, view: np.ndarray, E: np.ndarray, *, min_confidence: float = MIN_CONFIDENCE,
                  min_shared: int = MIN_SHARED) -> np.ndarray:
    """Cost (P, Q) of every pair of reference person (``ref`` (P, J, 3)) and view person
    (``view`` (Q, J, 3)), normalised coordinates + confidence: the mean over the keypoints both
    see of the symmetric epipolar distance, each side in that view's person sizes; ``inf``
    where they share fewer than ``min_shared`` keypoints."""
    P, Q = len(ref), len(view)
    if P == 0 or Q == 0:
        return np.zeros((P, Q))
    xr = np.concatenate([ref[..., :2], np.ones(ref.shape[:-1] + (1,))], -1)  # (P, J, 3)
    xv = np.concatenate([view[..., :2], np.ones(view.shape[:-1] + (1,))], -1)  # (Q, J, 3)
    line_v = xr @ E.T  # (P, J, 3): the epipolar line of each reference point in the view
    line_r = xv @ E  # (Q, J, 3): that of each view point in the reference
    algebraic = np.einsum("qjc,pjc->pqj", xv, line_v)  # x_v^T E x_r, (P, Q, J)
    d_view = np.abs(algebraic) / np.maximum(np.linalg.norm(line_v[:, None, :, :2], axis=-1), 1e-12)
    d_ref = np.abs(algebraic) / np.maximum(np.linalg.norm(line_r[None, :, :, :2], axis=-1), 1e-12)
    size_r, size_v = person_size(ref, min_confidence), person_size(view, min_confidence)
    d = 0.5 * (d_ref / size_r[:, None, None] + d_view / size_v[None, :, None])
    shared = (ref[:, None, :, 2] > min_confidence) & (view[None, :, :, 2] > min_confidence)
    n = shared.sum(-1)
    mean = np.where(shared, d, 0.0).sum(-1) / np.maximum(n, 1)
    ok = (n >= min_shared) & np.isfinite(mean)
    return np.where(ok, mean, np.inf)


def lift_cost(ref: np.ndarray, ref_conf: np.ndarray, view: np.ndarray, view_conf: np.ndarray, R: np.ndarray, *,
              min_confidence: float = MIN_CONFIDENCE, min_bones: int = MIN_BONES) -> np.ndarray:
    """Disagreement (P, Q) of the lifts of every pair of reference person and view person:
    the mean angle (radians, 0 to pi) between their bones' directions, the view's landmarks
    turned into the reference camera's axes (``R`` maps reference axes to the view's).
    ``ref`` (P, J, 3), ``view`` (Q, J, 3): metric landmarks in each camera's axes (any
    origin, any scale); ``ref_conf`` (P, J), ``view_conf`` (Q, J): the keypoints'
    confidences (a bone counts where its two points are confident in both views). NaN for
    pairs sharing fewer than ``min_bones`` bones (a person whose landmarks are all zero:
    none given, shares none)."""
    P, Q = len(ref), len(view)
    if P == 0 or Q == 0:
        return np.zeros((P, Q))
    b0, b1 = np.array(BONES).T

    def directions(points):
        d = points[:, b1] - points[:, b0]
        n = np.linalg.norm(d, axis=-1, keepdims=True)
        return d / np.maximum(n, 1e-9), n[..., 0] > 1e-6

    dr, ok_r = directions(np.asarray(ref, np.float64))
    dv, ok_v = directions(np.asarray(view, np.float64) @ np.asarray(R, np.float64))  # rows: R^T x
    ok_r &= (ref_conf[:, b0] > min_confidence) & (ref_conf[:, b1] > min_confidence)
    ok_v &= (view_conf[:, b0] > min_confidence) & (view_conf[:, b1] > min_confidence)
    angle = np.arccos(np.clip(np.einsum("pbc,qbc->pqb", dr, dv), -1.0, 1.0))
    shared = ok_r[:, None] & ok_v[None]
    n = shared.sum(-1)
    mean = np.where(shared, angle, 0.0).sum(-1) / np.maximum(n, 1)
    return np.where(n >= min_bones, mean, np.nan)


class CrossViewMatcher:
    """Matches the people of each other view of a rig to the reference view's, frame after
    frame, with stable matches (module doc). ``poses``: per other view ``(R, t)``, the map
    ``X_view = R X_ref + t`` (metres; only the direction of ``t`` matters here).
    ``lift_weight``: the weight of the lifts' disagreement (:func:`lift_cost`) in the
    assignment, where landmarks are given (0: epipolar geometry alone)."""

    def __init__(self, poses: Sequence[tuple[np.ndarray, np.ndarray]], *, gate: float = GATE,
                 keep_gate: float = KEEP_GATE, keep_discount: float = KEEP_DISCOUNT,
                 min_confidence: float = MIN_CONFIDENCE, min_shared: int = MIN_SHARED,
                 lift_weight: float = LIFT_WEIGHT):
        if not gate > 0 or keep_gate < gate or not 0 < keep_discount <= 1:
            raise ValueError("CrossViewMatcher: need gate > 0, keep_gate >= gate and 0 < keep_discount <= 1")
        self.essentials = [essential_matrix(R, t) for R, t in poses]
        self.rotations = [np.asarray(R, np.float64) for R, _ in poses]
        self.lift_weight = lift_weight
        for i, (R, t) in enumerate(poses):
            if np.linalg.norm(np.asarray(t, np.float64)) < 1e-9:
                raise ValueError(f"CrossViewMatcher: view {i + 1} sits where the reference camera does "
                                 "(zero baseline): epipolar geometry cannot tell people apart")
        self.gate, self.keep_gate, self.keep_discount = gate, keep_gate, keep_discount
        self.min_confidence, self.min_shared = min_confidence, min_shared
        self._previous: list[dict[int, int]] = [{} for _ in poses]
        self.last_costs: list[dict[tuple[int, int], float]] = [{} for _ in poses]
        # The lifts' disagreement (radians) of each pair, where landmarks were given.
        self.last_lift_costs: list[dict[tuple[int, int], float]] = [{} for _ in poses]

    @property
    def views(self) -> int:
        """Number of other views (the reference not counted)."""
        return len(self.essentials)

    def match(self, reference: Mapping[int, np.ndarray], views: Sequence[Mapping[int, np.ndarray] | None], *,
              reference_landmarks: Mapping[int, np.ndarray] | None = None,
              view_landmarks: Sequence[Mapping[int, np.ndarray] | None] | None = None) -> list[dict[int, int]]:
        """One frame: ``reference`` maps each reference person's id to its keypoints (J, 3),
        normalised + confidence; ``views`` per other view the same (None or empty: the view
        has no one, or no frame). Returns per other view ``{view id: reference id}``.
        ``reference_landmarks`` and ``view_landmarks`` (the same shapes of mapping): each
        person's metric 3D landmarks (J, 3) in its camera's axes (the landmark network's,
        turned from the crop's ray: :func:`engines.diffusion.features.world_landmarks_to_camera`);
        a person without is compared by geometry alone."""
        if len(views) != self.views:
            raise ValueError(f"CrossViewMatcher.match: {len(views)} views given, the rig has {self.views} besides "
                             "the reference")
        ref_ids = list(reference)
        ref_kp = np.stack([np.asarray(reference[i], np.float64) for i in ref_ids]) if ref_ids else np.zeros((0, 33, 3))
        out: list[dict[int, int]] = []
        for v, people in enumerate(views):
            people = people or {}
            ids = list(people)
            if not ids or not ref_ids:
                self._previous[v] = {}
                self.last_costs[v] = {}
                out.append({})
                continue
            kp = np.stack([np.asarray(people[i], np.float64) for i in ids])
            cost = epipolar_cost(ref_kp, kp, self.essentials[v], min_confidence=self.min_confidence,
                                 min_shared=self.min_shared)
            self.last_costs[v] = {(ref_ids[a], ids[b]): float(cost[a, b]) for a in range(len(ref_ids))
                                  for b in range(len(ids))}
            allowed = cost < self.gate
            lift = self._lift_cost(v, ref_ids, ref_kp, ids, kp, reference_landmarks,
                                   None if view_landmarks is None else view_landmarks[v])
            weighted = cost + self.lift_weight * lift
            previous = self._previous[v]
            for b, vid in enumerate(ids):
                rid = previous.get(vid)
                if rid is not None and rid in reference:
                    a = ref_ids.index(rid)
                    if cost[a, b] < self.keep_gate:
                        # Still plausible: kept unless another pairing is clearly better.
                        allowed[a, b] = True
                        weighted[a, b] *= self.keep_discount
            rows, cols = linear_sum_assignment(np.where(allowed, weighted, 1e6))
            matched = {ids[b]: ref_ids[a] for a, b in zip(rows, cols) if allowed[a, b]}
            self._previous[v] = matched
            out.append(matched)
        return out

    def _lift_cost(self, v: int, ref_ids: list, ref_kp: np.ndarray, ids: list, kp: np.ndarray,
                   reference_landmarks: Mapping[int, np.ndarray] | None,
                   landmarks: Mapping[int, np.ndarray] | None) -> np.ndarray:
        """:func:`lift_cost` of view ``v``'s pairs (zeros where landmarks are missing)."""
        if not self.lift_weight or not reference_landmarks or not landmarks:
            self.last_lift_costs[v] = {}
            return np.zeros((len(ref_ids), len(ids)))

        def stack(found, people):
            return np.stack([np.zeros((kp.shape[1], 3)) if found.get(i) is None else np.asarray(found[i], np.float64)
                             for i in people])

        lm_ref, lm = stack(reference_landmarks, ref_ids), stack(landmarks, ids)
        lift = lift_cost(lm_ref, ref_kp[..., 2], lm, kp[..., 2], self.rotations[v],
                         min_confidence=self.min_confidence)
        self.last_lift_costs[v] = {(ref_ids[a], ids[b]): float(lift[a, b]) for a in range(len(ref_ids))
                                   for b in range(len(ids))}
        # A pair that cannot be compared is neither favoured nor held back: it counts as the
        # median of the pairs that can (0 would favour whoever shows the fewest bones).
        known = np.isfinite(lift)
        return np.where(known, lift, np.median(lift[known]) if known.any() else 0.0)
