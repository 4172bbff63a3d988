"""Preview video: each frame with its persons drawn over it: the posed body mesh where the
lifter gave one, the box, track id and 2D skeleton."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
import torch

from engines.body.joint_sets import BLAZEPOSE33_EDGES, SMPL24_PARENTS

from .frames import Frame, Person

log = logging.getLogger("smplstream.preview")

# Distinct BGR colours, picked by track id.
_PALETTE = (
    (255, 128, 0), (0, 200, 255), (80, 220, 80), (255, 0, 255), (0, 128, 255),
    (255, 255, 0), (128, 0, 255), (0, 255, 128), (200, 200, 200), (60, 60, 255),
)  # fmt: skip


def track_colour(track_id: int) -> tuple[int, int, int]:
    """A stable BGR colour for a track id."""
    return _PALETTE[track_id % len(_PALETTE)]


def draw_persons(
    frame_bgr: np.ndarray,
    persons: Sequence[Person],
    min_confidence: float = 0.3,
    pixel_scale: float = 1.0,
) -> np.ndarray:
    """Draw the persons of a frame (box, id, score, BlazePose skeleton) on a copy of a BGR image.

    Persons are :class:`streamer.frames.Person` s; what is drawn comes from their arrays
    ``box_xyxy`` and ``keypoints_blazepose33`` (either may be absent), in source pixels times
    ``pixel_scale`` (the image's size over the source's).
    """
    out = frame_bgr.copy()
    scale = max(out.shape[:2]) / 1000.0
    thick = max(1, int(round(2 * scale)))
    for p in persons:
        colour = track_colour(int(p.track_id))
        box = p.arrays.get("box_xyxy")
        if box is not None:
            x1, y1, x2, y2 = (int(round(float(v) * pixel_scale)) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
            cv2.putText(out, f"id {p.track_id} {p.score:.2f}", (x1, max(0, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * scale, colour, thick, cv2.LINE_AA)
        kp = p.arrays.get("keypoints_blazepose33")
        if kp is None:
            continue
        kp = np.asarray(kp) * [pixel_scale, pixel_scale, 1.0]
        ok = kp[:, 2] >= min_confidence
        for a, b in BLAZEPOSE33_EDGES:
            if ok[a] and ok[b]:
                cv2.line(out, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])), colour, thick, cv2.LINE_AA)
        for (x, y, _), good in zip(kp, ok):
            if good:
                cv2.circle(out, (int(x), int(y)), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


class BodyMeshDrawer:
    """Draws each person's posed body (a coarse mesh, flat-shaded, depth-sorted, see-through)
    through the run's camera, lens distortion included."""

    def __init__(self, camera, body=None, cell: float = 0.03, opacity: float = 0.6, shades: int = 12,
                 depth_bins: int = 32):
        from engines.body.body_model import BodyModel
        from engines.body.decimate import cluster_decimate

        self.camera = camera
        self.body = body or BodyModel.load()
        keep, faces = cluster_decimate(self.body.v_template.numpy(), self.body.faces.numpy(), cell)
        self.keep = torch.as_tensor(keep)
        self.faces = faces
        self.opacity = opacity
        self.shades, self.depth_bins = shades, depth_bins

    def vertices(self, persons: Sequence[Person]) -> list[np.ndarray]:
        """Camera-frame vertices (V', 3) of the coarse mesh of every person with SMPL arrays."""
        with_body = [p for p in persons if "poses" in p.arrays]
        if not with_body:
            return []
        stack = lambda k: torch.as_tensor(np.stack([p.arrays[k] for p in with_body]), dtype=torch.float32)  # noqa: E731
        with torch.no_grad():
            out = self.body(stack("poses").view(-1, 24, 3), stack("betas"), stack("trans"), return_vertices=True)
        return list(out.vertices[:, self.keep].numpy())

    def draw(self, frame_bgr: np.ndarray, persons: Sequence[Person]) -> np.ndarray:
        """Draw in place and return the frame.

        Painter's algorithm in batches: triangles are sorted far to near into ``depth_bins``
        slices, and within a slice the triangles of one person and one of ``shades`` shading
        levels are filled by one ``cv2.fillPoly`` call (a few hundred calls a frame instead of
        two per triangle). Order is exact between slices, approximate within one (a slice is a
        few centimetres deep).
        """
        with_body = [p for p in persons if "poses" in p.arrays]
        polygons, depths, keys, colours = [], [], [], []
        for k, (person, verts) in enumerate(zip(with_body, self.vertices(with_body))):
            tri = verts[self.faces]  # (F, 3, 3)
            centre = tri.mean(1)
            normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
            facing = (normal * centre).sum(1) < 0  # towards the camera
            ok = facing & (tri[..., 2] > 0.05).all(1)
            px = self.camera.project(verts.astype(np.float64))[self.faces[ok]]
            shade = 0.35 + 0.65 * np.abs((normal[ok] * centre[ok]).sum(1) / np.linalg.norm(centre[ok], axis=1))
            level = np.minimum((shade * self.shades).astype(np.int64), self.shades - 1)
            base = np.array(track_colour(int(person.track_id)), np.float64)
            polygons.append(px)
            depths.append(centre[ok, 2])
            keys.append(k * self.shades + level)
            colours.append(((np.arange(self.shades) + 0.5) / self.shades)[:, None] * (0.5 * base + 0.5 * 255))
        if not polygons:
            return frame_bgr
        px, depth, key = np.concatenate(polygons), np.concatenate(depths), np.concatenate(keys)
        palette = np.concatenate(colours)  # row k * shades + level
        finite = np.isfinite(px).all(axis=(1, 2)) & (np.abs(px) < 1e5).all(axis=(1, 2))
        px, depth, key = px[finite], depth[finite], key[finite]
        if not len(px):
            return frame_bgr
        H, W = frame_bgr.shape[:2]
        x0, y0 = np.clip(np.floor(px.reshape(-1, 2).min(0)).astype(int), 0, [W, H])
        x1, y1 = np.clip(np.ceil(px.reshape(-1, 2).max(0)).astype(int) + 1, 0, [W, H])
        if x1 <= x0 or y1 <= y0:
            return frame_bgr
        # Far slice first; within a slice, one fill per (person, shade).
        span = max(float(depth.max() - depth.min()), 1e-6)
        slice_ = np.minimum(((depth.max() - depth) / span * self.depth_bins).astype(np.int64), self.depth_bins - 1)
        group = slice_ * len(palette) + key
        order = np.argsort(group, kind="stable")
        px = np.round(px[order] - [x0, y0]).astype(np.int32)
        group = group[order]
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        ends = np.r_[starts[1:], len(group)]
        roi = frame_bgr[y0:y1, x0:x1]
        overlay = roi.copy()
        for a, b in zip(starts, ends):
            cv2.fillPoly(overlay, px[a:b], palette[group[a] % len(palette)].tolist())
        # Blend the whole box: where nothing was painted, overlay == roi and the weighted sum
        # gives the pixel back unchanged, so no coverage mask is needed.
        cv2.addWeighted(overlay, self.opacity, roi, 1 - self.opacity, 0, dst=roi)
        return frame_bgr


class SkeletonDrawer:
    """Draws each person's SMPL skeleton (``joints``, camera frame) projected through the run's
    camera: bones as lines, far persons first. Much cheaper than the mesh."""

    def __init__(self, camera):
        self.camera = camera

    def draw(self, frame_bgr: np.ndarray, persons: Sequence[Person]) -> np.ndarray:
        """Draw in place and return the frame."""
        with_joints = [p for p in persons if "joints" in p.arrays]
        with_joints.sort(key=lambda p: -float(np.asarray(p.arrays["joints"])[0, 2]))
        scale = max(frame_bgr.shape[:2]) / 1000.0
        thick = max(2, int(round(4 * scale)))
        for person in with_joints:
            joints = np.asarray(person.arrays["joints"], np.float64)
            if (joints[:, 2] <= 0.05).any():
                continue  # behind or at the camera: no sensible projection
            px = self.camera.project(joints)
            if not np.isfinite(px).all() or (np.abs(px) > 1e5).any():
                continue
            px = np.round(px).astype(np.int32)
            base = np.array(track_colour(int(person.track_id)), np.float64)
            light = tuple(int(c) for c in 0.5 * base + 0.5 * 255)
            for j, parent in enumerate(SMPL24_PARENTS):
                if parent >= 0:
                    cv2.line(frame_bgr, tuple(px[parent]), tuple(px[j]), light, thick, cv2.LINE_AA)
            for x, y in px:
                cv2.circle(frame_bgr, (int(x), int(y)), thick, (255, 255, 255), -1, cv2.LINE_AA)
        return frame_bgr


def draw_status(frame_bgr: np.ndarray, text: str) -> None:
    """Write a status line (frame number, fps) in the top-left corner, in place, white on a
    dark box so it reads over a bright sky too."""
    scale = max(frame_bgr.shape[:2]) / 1000.0
    font, size, width = cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, max(1, int(round(1.5 * scale)))
    (tw, th), base = cv2.getTextSize(text, font, size, width)
    pad = max(2, int(6 * scale))
    org = (pad + int(4 * scale), pad + th + int(4 * scale))
    box = frame_bgr[max(0, org[1] - th - pad):org[1] + base + pad, max(0, org[0] - pad):org[0] + tw + pad]
    box[:] = (box * 0.35).astype(frame_bgr.dtype)
    cv2.putText(frame_bgr, text, org, font, size, (255, 255, 255), width, cv2.LINE_AA)


MIN_PREVIEW_SIDE = 64  # pixels: a smaller source is enlarged in the preview
#: The preview is drawn and encoded at most this wide (or tall): at the bundled clip's
#: 1768x994, H.264 costs 13.5 ms a frame against 5.4 at 1280x720 (docs/viewer.md).
PREVIEW_MAX_SIDE = 1280
PREVIEW_QUEUE = 4  # frames waiting for the preview's thread


def preview_size(size: tuple[int, int]) -> tuple[int, int]:
    """The preview's (even) size for a source of ``size``: at most PREVIEW_MAX_SIDE on its
    long side, tiny sources enlarged by a whole factor to at least MIN_PREVIEW_SIDE."""
    w, h = size
    zoom = max(1, -(-MIN_PREVIEW_SIDE // max(1, min(size))))
    factor = min(float(zoom), PREVIEW_MAX_SIDE / max(w, h)) if zoom == 1 else float(zoom)
    width, height = max(2, round(w * factor)), max(2, round(h * factor))
    return width - width % 2, height - height % 2


class PreviewWriter:
    """Writes the pipeline's frames with their persons drawn over them to an H.264 video, on
    a thread of its own (so drawing and encoding overlap the pipeline's stages), at most
    PREVIEW_MAX_SIDE pixels on the long side.

    Frames are written at the source's rate. ``live``: when the preview falls behind, it
    skips frames (counted in ``dropped``) rather than hold up the pipeline; offline every
    frame is drawn, the pipeline waiting when PREVIEW_QUEUE frames are queued. In live mode
    frames the pipeline dropped are missing too, so the preview plays faster than real time.
    The status line's fps is the pipeline's output rate over the last second.
    """

    def __init__(self, path: str | Path, *, fps: float, size: tuple[int, int], camera=None,
                 skeleton: bool = False, live: bool = False):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise ValueError(f"--preview {path}: use a .mp4, .mkv or .mov file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = preview_size(size)
        self.pixel_scale = self._stream.width / max(1, size[0])
        self._stream.pix_fmt = "yuv420p"
        # ultrafast on one thread: at 1280x720 3.8 ms a frame against superfast's 5.4, for
        # twice the bytes (19 KiB a frame); a preview must not starve the pipeline of cores.
        self._stream.options = {"crf": "23", "preset": "ultrafast", "threads": "1"}
        self.frames = 0
        self.dropped = 0
        self.live = live
        self.camera = None if camera is None else camera.scaled(self._stream.width, self._stream.height)
        self._mesh: BodyMeshDrawer | SkeletonDrawer | None = None
        self.skeleton = skeleton  # draw the projected 3D skeleton instead of the mesh
        self._arrivals: deque[float] = deque(maxlen=31)
        self._queue: queue.Queue = queue.Queue(maxsize=PREVIEW_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="preview", daemon=True)
        self._thread.start()

    def write(self, frame: Frame) -> None:
        """Queue the frame for the preview (its image and persons, as they are now)."""
        if self._error is not None:
            raise RuntimeError(f"preview {self.path}: {self._error}") from self._error
        now = time.monotonic()
        self._arrivals.append(now)
        if frame.image is None:
            return
        span = self._arrivals[-1] - self._arrivals[0]
        fps = (len(self._arrivals) - 1) / span if span > 0 else 0.0
        item = (frame.index, frame.image, list(frame.persons), fps)
        if self.live:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.dropped += 1
        else:
            self._queue.put(item)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain: the error is raised to the pipeline
            try:
                self._draw_and_encode(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the pipeline's thread
                self._error = exc

    def _bodies(self, bgr: np.ndarray, persons: Sequence[Person]) -> None:
        if self.camera is None or not any("poses" in p.arrays for p in persons):
            return
        if self._mesh is None:
            self._mesh = SkeletonDrawer(self.camera) if self.skeleton else BodyMeshDrawer(self.camera)
        self._mesh.draw(bgr, persons)

    def _draw_and_encode(self, index: int, image: np.ndarray, persons: Sequence[Person], fps: float) -> None:
        w, h = self._stream.width, self._stream.height
        if image.shape[1] != w or image.shape[0] != h:
            # Tiny frames: whole pixels, not a blur; large ones: drawn at the preview's size.
            interpolation = cv2.INTER_NEAREST if image.shape[1] < w // 2 else cv2.INTER_LINEAR
            image = cv2.resize(image, (w, h), interpolation=interpolation)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        self._bodies(bgr, persons)
        bgr = draw_persons(bgr, persons, pixel_scale=self.pixel_scale)
        self.frames += 1
        draw_status(bgr, f"frame {index}  {len(persons)} person(s)  {fps:.1f} fps")
        # OpenCV's BGR -> I420 (BT.601, as libswscale's default) is SIMD and about 10 ms a
        # frame cheaper at 1768x994 than letting PyAV convert bgr24.
        yuv = cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2YUV_I420)
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(yuv, format="yuv420p")):
            self._container.mux(packet)

    def close(self) -> None:
        """Draw what is queued, finish the video. Raises what the preview's thread hit."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.dropped:
            log.info("preview: %d of %d frames skipped to keep up with the live pipeline", self.dropped,
                     self.dropped + self.frames)
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
        if self._error is not None:
            raise RuntimeError(f"preview {self.path}: {self._error}") from self._error
