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
        n = int(m.sum())
        if n:
            # np.median's own checks cost ~0.1 ms for a few dozen values (every live frame):
            # the same value from the sorted ones.
            s = np.sort(d[m])
            out[i] = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return out


#: Errors are kept as counts in log-spaced bins, each 1 % wider than the one before, from
#: 0.001 to 100,000 (px, or % of the person's size): a run of any length (a live camera left
#: on for days) holds a fixed 15 KB per track instead of every point it measured, and a
#: median or p90 read from the counts is within half a bin (0.5 %) of the exact one.
_EDGES = 1e-3 * 1.01 ** np.arange(int(np.ceil(np.log(1e8) / np.log(1.01))) + 1)


class ErrorHistogram:
    """Counts of non-negative values in the log-spaced bins of :data:`_EDGES` (one more bin
    below the first edge and one above the last), and quantiles read from them."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(_EDGES) + 1, np.int64)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        self.counts += np.bincount(np.searchsorted(_EDGES, np.asarray(values, np.float64).ravel(), side="right"),
                                   minlength=len(self.counts))

    @classmethod
    def combined(cls, histograms) -> "ErrorHistogram":
        """One histogram of every value counted in ``histograms``."""
        out = cls()
        for h in histograms:
            out.counts += h.counts
        return out

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0-1), interpolated within its bin on a log scale (NaN if empty)."""
        n = self.total
        if n == 0:
            return float("nan")
        cum = np.cumsum(self.counts)
        rank = q * (n - 1) + 0.5  # the value's position among n ranked ones, counted from the bin's start
        b = int(np.searchsorted(cum, rank, side="left"))
        if b == 0:
            return 0.0  # below the first edge: nothing measurable
        lo, hi = _EDGES[b - 1], _EDGES[min(b, len(_EDGES) - 1)]
        before = cum[b] - self.counts[b]  # values in the bins below
        frac = (rank - before) / self.counts[b]
        return float(lo * (hi / lo) ** min(max(frac, 0.0), 1.0))


@dataclass
class FitQuality:
    """Collects re-projection errors of a run, per track: every counted point's distance in
    px and in % of its person's size, as :class:`ErrorHistogram` s (bounded memory however
    long the run). ``summary()`` gives median and p90 per track and overall; ``table()`` the
    lines printed at the end of a run."""

    px: dict[int, ErrorHistogram] = field(default_factory=dict)
    pct: dict[int, ErrorHistogram] = field(default_factory=dict)
    frames: dict[int, int] = field(default_factory=dict)

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
            tid = int(track_id)
            if tid not in self.px:
                self.px[tid], self.pct[tid], self.frames[tid] = ErrorHistogram(), ErrorHistogram(), 0
            self.px[tid].add(d)
            self.pct[tid].add(100.0 * d / max(float(size), 1.0))
            self.frames[tid] += 1

    @staticmethod
    def _stats(px: ErrorHistogram, pct: ErrorHistogram, frames: int) -> dict:
        return {"frames": frames, "points": px.total,
                "median_px": px.quantile(0.5), "p90_px": px.quantile(0.9),
                "median_pct": pct.quantile(0.5), "p90_pct": pct.quantile(0.9)}

    def summary(self) -> dict:
        """``{"overall": {...}, "tracks": {id: {...}}}``: frames, points counted, median and
        p90 in px and in % of the person's size; empty when nothing was measured."""
        if not self.px:
            return {}
        tracks = {tid: self._stats(self.px[tid], self.pct[tid], self.frames[tid]) for tid in sorted(self.px)}
        overall = self._stats(ErrorHistogram.combined(self.px.values()), ErrorHistogram.combined(self.pct.values()),
                              sum(self.frames.values()))
        return {"overall": overall, "tracks": tracks,
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
