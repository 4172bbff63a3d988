"""Fit quality without ground truth: how far each published body's BlazePose-33 points land,
re-projected through the run's camera, from the keypoints the detector found.

Per person and frame: the distance (px) of every keypoint the detector was sure of
(confidence above ``min_confidence``), and the person's size in the image (the larger side
of the box around those keypoints), so errors compare across people and resolutions as a
percentage of it. This is what a user can check on their own video, and it is reported on
every run (``docs/refinement.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from calibration.torch_projection import project_points

from .losses import person_size_px

#: Keypoints at or below this confidence are not counted (BlazePose's visibility is about 1
#: for points it sees and falls towards 0 for occluded ones).
QUALITY_MIN_CONFIDENCE = 0.5


def reprojection_distances(points3d: torch.Tensor, keypoints: torch.Tensor, K: torch.Tensor,
                           dist: torch.Tensor | None, model: str,
                           min_confidence: float = QUALITY_MIN_CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For N persons: camera-frame BlazePose-33 points (N, 33, 3) against detected keypoints
    (N, 33, 3) pixels + confidence. Returns distances (N, 33) px, the mask of counted points
    (N, 33) and each person's size (N,) px."""
    with torch.no_grad():
        px = project_points(points3d, K, dist, model)
        d = (px - keypoints[..., :2]).norm(dim=-1)
        mask = keypoints[..., 2] > min_confidence
        size = person_size_px(keypoints, min_confidence)
    return d.numpy(), mask.numpy(), size.numpy()


def frame_error(distances: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per person (N,): the median distance of its counted points (NaN where none)."""
    out = np.full(len(distances), np.nan, np.float32)
    for i, (d, m) in enumerate(zip(distances, mask)):
        if m.any():
            out[i] = np.median(d[m])
    return out


@dataclass
class FitQuality:
    """Collects re-projection errors of a run, per track: every counted point's distance in
    px and in % of its person's size. ``summary()`` gives median and p90 per track and
    overall; ``table()`` the lines printed at the end of a run."""

    px: dict[int, list[np.ndarray]] = field(default_factory=dict)
    pct: dict[int, list[np.ndarray]] = field(default_factory=dict)

    def measure(self, track_ids, points3d: torch.Tensor, keypoints: torch.Tensor, camera) -> np.ndarray:
        """Measure N bodies (their camera-frame BlazePose-33 points (N, 33, 3)) against their
        keypoints (N, 33, 3) through ``camera`` (``K``, ``dist``, ``model``, as
        :class:`engines.refinement.guided.CameraParams`), add them under ``track_ids`` (N,)
        and return each one's :func:`frame_error` (N,) px."""
        d, mask, size = reprojection_distances(points3d, keypoints, camera.K, camera.dist, camera.model)
        for i, track_id in enumerate(track_ids):
            self.add(track_id, d[i], mask[i], float(size[i]))
        return frame_error(d, mask)

    def add(self, track_id: int, distances: np.ndarray, mask: np.ndarray, size: float) -> None:
        d = distances[mask]
        if d.size:
            self.px.setdefault(int(track_id), []).append(d.astype(np.float32))
            self.pct.setdefault(int(track_id), []).append((100.0 * d / max(float(size), 1.0)).astype(np.float32))

    @staticmethod
    def _stats(px: np.ndarray, pct: np.ndarray, frames: int) -> dict:
        return {"frames": frames, "points": int(px.size),
                "median_px": float(np.median(px)), "p90_px": float(np.percentile(px, 90)),
                "median_pct": float(np.median(pct)), "p90_pct": float(np.percentile(pct, 90))}

    def summary(self) -> dict:
        """``{"overall": {...}, "tracks": {id: {...}}}``: frames, points counted, median and
        p90 in px and in % of the person's size; empty when nothing was measured."""
        if not self.px:
            return {}
        tracks = {tid: self._stats(np.concatenate(self.px[tid]), np.concatenate(self.pct[tid]), len(self.px[tid]))
                  for tid in sorted(self.px)}
        allpx = np.concatenate([np.concatenate(v) for v in self.px.values()])
        allpct = np.concatenate([np.concatenate(v) for v in self.pct.values()])
        frames = sum(len(v) for v in self.px.values())
        return {"overall": self._stats(allpx, allpct, frames), "tracks": tracks,
                "min_confidence": QUALITY_MIN_CONFIDENCE}

    def table(self) -> str:
        """Fit quality lines for the end-of-run table."""
        s = self.summary()
        if not s:
            return ""
        rows = [("re-projection", "median px", "p90 px", "median %", "p90 %", "frames")]
        for name, st in [*((f"track {t}", v) for t, v in s["tracks"].items()), ("all", s["overall"])]:
            rows.append((name, f"{st['median_px']:.1f}", f"{st['p90_px']:.1f}", f"{st['median_pct']:.2f}",
                         f"{st['p90_pct']:.2f}", str(st["frames"])))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        return "\n".join(lines) + "\n(% of the person's size in the image; points with confidence > " \
            f"{QUALITY_MIN_CONFIDENCE})"
