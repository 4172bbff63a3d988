"""The camera's rotation per frame from the video itself.

Corners on the static background (``cv2.goodFeaturesToTrack``, with the people's boxes and
any black border masked out) are followed by pyramidal Lucas-Kanade flow
(``cv2.calcOpticalFlowPyrLK``). Every pixel becomes a unit viewing ray through the camera
model (:meth:`calibration.camera.Camera.unproject`, pinhole or fisheye alike), and the
rotation between the keyframe's rays and the current rays is found by RANSAC over two-ray
samples with a Kabsch fit on the inliers. A pure rotation maps rays to rays exactly, so the
model holds for any lens.

Drift: each frame is measured against its keyframe, not the previous frame, so errors add
up only when the keyframe changes. When it changes, the stored keyframe whose orientation
is nearest the current estimate is tried first (flow from its image, started where the
estimated rotation puts its corners); if it matches, the estimate is re-anchored to it, so
looking back at a place seen before brings the error back to what it was there.

Translation: the camera's rotation is all this estimates. When the derotated rays still
move (parallax above :attr:`TrackerSettings.parallax_px`), the direction of the camera's
translation since the keyframe is reported (no scale); otherwise it is unknown (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from calibration.camera import Camera

from .rotations import angle_deg, fit_rotation, orthonormalize


@dataclass(frozen=True)
class TrackerSettings:
    """Knobs of :class:`VisualRotationTracker`; the defaults are the ones measured in
    ``docs/head-mounted.md``."""

    max_width: int = 640  # frames are tracked at most this wide (the camera is scaled to match)
    max_features: int = 200
    min_distance_px: int = 12  # between corners, at the working size
    corner_quality: float = 0.005
    lk_window: int = 21
    lk_levels: int = 3
    inlier_px: float = 1.0  # RANSAC threshold, pixels at the optical centre of the working size
    ransac_iters: int = 64
    min_inliers: int = 20
    keyframe_keep: float = 0.5  # a new keyframe when fewer than this share of its corners remain
    keyframe_max_deg: float = 10.0  # ... or the camera has turned this far from it
    reanchor_deg: float = 12.0  # stored keyframes this close to the estimate are tried for re-anchoring
    max_keyframes: int = 64
    box_margin: float = 0.1  # people's boxes grown by this share of their size before masking
    dark_level: int = 3  # pixels this dark (a fisheye's or a warp's black border) hold no corners
    parallax_px: float = 2.0  # derotated motion above this: translation direction is reported


@dataclass
class RotationEstimate:
    """The camera's orientation at one frame.

    ``rotation``: reference-camera-from-current-camera (the reference is the first frame's
    camera). ``ok`` is False when this frame could not be measured and ``rotation`` is the
    last good one carried over. ``translation_direction``: unit vector, the camera's motion
    since the keyframe in the keyframe's camera frame (no scale), or None when unknown.
    """

    rotation: np.ndarray
    ok: bool
    tracked: int = 0
    inliers: int = 0
    keyframe: bool = False
    reanchored: bool = False
    translation_direction: np.ndarray | None = None


@dataclass
class _Keyframe:
    gray: np.ndarray
    pixels: np.ndarray  # (N, 2) float32, working size
    rays: np.ndarray  # (N, 3)
    rotation: np.ndarray  # reference-from-keyframe
    index: int


@dataclass
class _Track:
    keyframe: _Keyframe
    ids: np.ndarray  # which of the keyframe's corners are still followed
    pixels: np.ndarray  # (M, 2) float32, their positions in the previous frame


class VisualRotationTracker:
    """Estimates the camera's rotation frame by frame (see the module doc).

    ``camera`` describes the frames as they are given to :meth:`update` (any size: the
    tracker works on a copy at most ``settings.max_width`` wide). Not thread-safe; one
    tracker per stream.
    """

    def __init__(self, camera: Camera, settings: TrackerSettings | None = None, seed: int = 0):
        self.camera = camera
        self.settings = settings or TrackerSettings()
        s = self.settings
        scale = min(1.0, s.max_width / camera.width)
        self.scale = scale
        self.work_size = (max(1, round(camera.width * scale)), max(1, round(camera.height * scale)))
        self.work_camera = camera.scaled(*self.work_size) if scale < 1.0 else camera
        focal = 0.5 * (self.work_camera.fx + self.work_camera.fy)
        self._inlier_cos = math.cos(math.atan(s.inlier_px / focal))
        self._parallax_rad = math.atan(s.parallax_px / focal)
        self._rng = np.random.default_rng(seed)
        self._keyframes: list[_Keyframe] = []
        self._track: _Track | None = None
        self._prev_gray: np.ndarray | None = None
        self._rotation = np.eye(3)
        self._frame = -1
        self._lk = dict(winSize=(s.lk_window, s.lk_window), maxLevel=s.lk_levels,
                        criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01))

    @property
    def rotation(self) -> np.ndarray:
        """The latest estimate (reference-from-current)."""
        return self._rotation.copy()

    def update(self, image: np.ndarray, boxes: np.ndarray | None = None) -> RotationEstimate:
        """Take the next frame (RGB or gray ``uint8``, the camera's size) and the people's
        boxes in it (``(P, 4)`` x1 y1 x2 y2 pixels, may be empty) and return its rotation."""
        if image.shape[1] != self.camera.width or image.shape[0] != self.camera.height:
            raise ValueError(f"camera motion: frame is {image.shape[1]}x{image.shape[0]} but the camera is "
                             f"{self.camera.width}x{self.camera.height}; give the camera of these frames")
        self._frame += 1
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.scale < 1.0:
            # halving by pyrDown first: INTER_AREA at an odd ratio costs several times more
            while gray.shape[1] >= 2 * self.work_size[0]:
                gray = cv2.pyrDown(gray)
            gray = cv2.resize(gray, self.work_size, interpolation=cv2.INTER_LINEAR)
        boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * self.scale
        mask = self._mask(gray, boxes)
        if self._track is None:
            self._new_keyframe(gray, mask, np.eye(3))
            self._prev_gray = gray
            return RotationEstimate(np.eye(3), True, keyframe=True)
        est = self._follow(gray, boxes)
        if est is None:
            # Lost (a blur, a wall without texture, a person filling the view): keep the last
            # orientation, try the stored keyframes, start again from here.
            reanchored = self._reanchor(gray, self._rotation)
            if reanchored is not None:
                self._rotation = reanchored
            self._new_keyframe(gray, mask, self._rotation)
            self._prev_gray = gray
            return RotationEstimate(self._rotation.copy(), reanchored is not None, keyframe=True,
                                    reanchored=reanchored is not None)
        R_kf_cur, inliers, tracked, direction = est
        track = self._track
        self._rotation = orthonormalize(track.keyframe.rotation @ R_kf_cur)
        result = RotationEstimate(self._rotation.copy(), True, tracked=tracked, inliers=inliers,
                                  translation_direction=direction)
        s = self.settings
        if (len(track.ids) < s.keyframe_keep * len(track.keyframe.rays) or len(track.ids) < 2 * s.min_inliers
                or angle_deg(R_kf_cur) > s.keyframe_max_deg):
            reanchored = self._reanchor(gray, self._rotation, exclude=track.keyframe)
            if reanchored is not None:
                self._rotation = reanchored
                result.rotation, result.reanchored = reanchored.copy(), True
            self._new_keyframe(gray, mask, self._rotation)
            result.keyframe = True
        self._prev_gray = gray
        return result

    # -- steps -----------------------------------------------------------------------------

    def _mask(self, gray: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        s = self.settings
        mask = np.where(gray > s.dark_level, 255, 0).astype(np.uint8)
        # corners near a black border would be the border's, fixed to the camera
        mask = cv2.erode(mask, np.ones((s.lk_window, s.lk_window), np.uint8))
        h, w = gray.shape
        for x1, y1, x2, y2 in boxes:
            mx, my = s.box_margin * (x2 - x1), s.box_margin * (y2 - y1)
            a, b = int(max(0, x1 - mx)), int(max(0, y1 - my))
            c, d = int(min(w, math.ceil(x2 + mx))), int(min(h, math.ceil(y2 + my)))
            if c > a and d > b:
                mask[b:d, a:c] = 0
        return mask

    def _new_keyframe(self, gray: np.ndarray, mask: np.ndarray, rotation: np.ndarray) -> None:
        s = self.settings
        corners = cv2.goodFeaturesToTrack(gray, s.max_features, s.corner_quality, s.min_distance_px, mask=mask)
        pixels = np.zeros((0, 2), np.float32) if corners is None else corners.reshape(-1, 2).astype(np.float32)
        rays = self.work_camera.unproject(pixels.astype(np.float64))
        good = np.isfinite(rays).all(axis=1)
        pixels, rays = pixels[good], rays[good]
        kf = _Keyframe(gray, pixels, rays, rotation.copy(), self._frame)
        self._track = _Track(kf, np.arange(len(pixels)), pixels.copy())
        nearest = min((angle_deg(k.rotation.T @ rotation) for k in self._keyframes), default=math.inf)
        # Keep the first keyframe of each viewing direction: later ones carry more drift.
        if nearest > 0.5 * s.reanchor_deg and len(pixels) >= 2 * s.min_inliers:
            self._keyframes.append(kf)
            if len(self._keyframes) > s.max_keyframes:
                self._keyframes.pop(1)  # the first one defines the reference: keep it

    def _follow(self, gray: np.ndarray, boxes: np.ndarray):
        track = self._track
        if len(track.ids) < self.settings.min_inliers:
            return None
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(self._prev_gray, gray, track.pixels.reshape(-1, 1, 2), None,
                                                  **self._lk)
        nxt = nxt.reshape(-1, 2)
        ok = status.reshape(-1).astype(bool) & self._inside(nxt) & ~self._in_boxes(nxt, boxes)
        ids, nxt = track.ids[ok], nxt[ok]
        rays = self.work_camera.unproject(nxt.astype(np.float64))
        finite = np.isfinite(rays).all(axis=1)
        ids, nxt, rays = ids[finite], nxt[finite], rays[finite]
        if len(ids) < self.settings.min_inliers:
            return None
        kf_rays = track.keyframe.rays[ids]
        fit = self._ransac(kf_rays, rays)
        if fit is None:
            return None
        R, inl = fit
        tracked = len(ids)
        track.ids, track.pixels = ids[inl], nxt[inl].astype(np.float32)
        direction = self._translation(kf_rays[inl], rays[inl] @ R.T)
        return R, int(inl.sum()), tracked, direction

    def _reanchor(self, gray: np.ndarray, estimate: np.ndarray, exclude: _Keyframe | None = None):
        """The current rotation measured against the stored keyframe nearest ``estimate``,
        or None when none is near enough or the match fails."""
        s = self.settings
        candidates = [(angle_deg(k.rotation.T @ estimate), i) for i, k in enumerate(self._keyframes)
                      if k is not exclude]
        candidates = [c for c in candidates if c[0] < s.reanchor_deg]
        if not candidates:
            return None
        kf = self._keyframes[min(candidates)[1]]
        R_cur_kf = estimate.T @ kf.rotation
        predicted = self.work_camera.project(kf.rays @ R_cur_kf.T)
        use = np.isfinite(predicted).all(axis=1) & self._inside(predicted)
        if use.sum() < s.min_inliers:
            return None
        start = predicted[use].astype(np.float32).reshape(-1, 1, 2)
        nxt, status, _ = cv2.calcOpticalFlowPyrLK(kf.gray, gray, kf.pixels[use].reshape(-1, 1, 2), start.copy(),
                                                  flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **self._lk)
        nxt = nxt.reshape(-1, 2)
        ok = status.reshape(-1).astype(bool) & self._inside(nxt)
        rays = self.work_camera.unproject(nxt[ok].astype(np.float64))
        kf_rays = kf.rays[use][ok]
        finite = np.isfinite(rays).all(axis=1)
        if finite.sum() < s.min_inliers:
            return None
        fit = self._ransac(kf_rays[finite], rays[finite])
        if fit is None or fit[1].sum() < max(s.min_inliers, 0.3 * use.sum()):
            return None
        rotation = orthonormalize(kf.rotation @ fit[0])
        if angle_deg(rotation.T @ estimate) > 0.5 * s.reanchor_deg:
            return None  # a jump that large is a wrong match, not drift
        return rotation

    def _ransac(self, a: np.ndarray, b: np.ndarray):
        """R with ``a ~ R b`` and the inlier mask, or None with too few inliers."""
        s = self.settings
        n = len(a)
        pairs = self._rng.integers(0, n, size=(s.ransac_iters, 2))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        if len(pairs) == 0:
            return None
        Rs = fit_rotation(a[pairs], b[pairs])  # (I, 3, 3)
        cos = np.einsum("nk,ikj,nj->in", a, Rs, b)  # a_n . (R_i b_n)
        counts = (cos > self._inlier_cos).sum(axis=1)
        best = int(np.argmax(counts))
        inl = cos[best] > self._inlier_cos
        for _ in range(2):  # refit on the inliers, then take the inliers of the refit
            if inl.sum() < s.min_inliers:
                return None
            R = fit_rotation(a[inl], b[inl])
            inl = np.einsum("nk,kj,nj->n", a, R, b) > self._inlier_cos
        if inl.sum() < s.min_inliers:
            return None
        return fit_rotation(a[inl], b[inl]), inl

    def _translation(self, a: np.ndarray, c: np.ndarray) -> np.ndarray | None:
        """Direction of the camera's motion from rays ``a`` (keyframe) and ``c`` (current,
        derotated into the keyframe), or None without enough parallax."""
        cross = np.cross(a, c)
        if len(a) < 8 or np.median(np.linalg.norm(cross, axis=1)) < math.sin(self._parallax_rad):
            return None
        # every epipolar plane contains the baseline: t is orthogonal to each a x c
        _, _, vt = np.linalg.svd(cross)
        t = vt[2]
        # cheirality: the point lam*a = t + mu*c must lie in front of both cameras
        A = np.stack([a, -c], axis=2)  # (N, 3, 2)
        lam = np.einsum("nij,j->ni", np.linalg.pinv(A), t)
        votes = np.sign(lam).sum()
        return t if votes >= 0 else -t

    def _inside(self, pixels: np.ndarray) -> np.ndarray:
        w, h = self.work_size
        return (pixels[:, 0] >= 0) & (pixels[:, 0] <= w - 1) & (pixels[:, 1] >= 0) & (pixels[:, 1] <= h - 1)

    @staticmethod
    def _in_boxes(pixels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if len(boxes) == 0:
            return np.zeros(len(pixels), bool)
        x, y = pixels[:, 0:1], pixels[:, 1:2]
        return ((x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])).any(axis=1)


@dataclass
class CameraTrajectory:
    """Rotations of a whole clip (offline use and tests)."""

    rotations: np.ndarray  # (T, 3, 3) reference-from-camera
    ok: np.ndarray  # (T,) bool
    keyframes: list[int] = field(default_factory=list)
    reanchors: list[int] = field(default_factory=list)


def track_frames(frames, camera: Camera, boxes=None, settings: TrackerSettings | None = None) -> CameraTrajectory:
    """Run a :class:`VisualRotationTracker` over ``frames`` (an iterable of images);
    ``boxes``: per frame ``(P, 4)`` boxes, or None."""
    tracker = VisualRotationTracker(camera, settings)
    rotations, ok, keyframes, reanchors = [], [], [], []
    for i, image in enumerate(frames):
        est = tracker.update(image, None if boxes is None else boxes[i])
        rotations.append(est.rotation)
        ok.append(est.ok)
        if est.keyframe:
            keyframes.append(i)
        if est.reanchored:
            reanchors.append(i)
    return CameraTrajectory(np.array(rotations), np.array(ok), keyframes, reanchors)
