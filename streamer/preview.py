"""Preview video: each frame with its persons drawn over it: the posed body mesh where the
lifter gave one, the box, track id and 2D skeleton."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
import torch

from engines.body.joint_sets import BLAZEPOSE33_EDGES

from .frames import Frame, Person

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
) -> np.ndarray:
    """Draw the persons of a frame (box, id, score, BlazePose skeleton) on a copy of a BGR image.

    Persons are :class:`streamer.frames.Person` s; what is drawn comes from their arrays
    ``box_xyxy`` and ``keypoints_blazepose33`` (either may be absent).
    """
    out = frame_bgr.copy()
    scale = max(out.shape[:2]) / 1000.0
    thick = max(1, int(round(2 * scale)))
    for p in persons:
        colour = track_colour(int(p.track_id))
        box = p.arrays.get("box_xyxy")
        if box is not None:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
            cv2.putText(out, f"id {p.track_id} {p.score:.2f}", (x1, max(0, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * scale, colour, thick, cv2.LINE_AA)
        kp = p.arrays.get("keypoints_blazepose33")
        if kp is None:
            continue
        kp = np.asarray(kp)
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

    def __init__(self, camera, body=None, cell: float = 0.03, opacity: float = 0.6):
        from engines.body.body_model import BodyModel
        from engines.body.decimate import cluster_decimate

        self.camera = camera
        self.body = body or BodyModel.load()
        keep, faces = cluster_decimate(self.body.v_template.numpy(), self.body.faces.numpy(), cell)
        self.keep = torch.as_tensor(keep)
        self.faces = faces
        self.opacity = opacity

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
        """Draw in place and return the frame."""
        with_body = [p for p in persons if "poses" in p.arrays]
        polygons, depths, colours = [], [], []
        for person, verts in zip(with_body, self.vertices(with_body)):
            tri = verts[self.faces]  # (F, 3, 3)
            centre = tri.mean(1)
            normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
            normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
            facing = (normal * centre).sum(1) < 0  # towards the camera
            ok = facing & (tri[..., 2] > 0.05).all(1)
            px = self.camera.project(verts.astype(np.float64))[self.faces[ok]]
            shade = 0.35 + 0.65 * np.abs((normal[ok] * centre[ok]).sum(1) / np.linalg.norm(centre[ok], axis=1))
            base = np.array(track_colour(int(person.track_id)), np.float64)
            polygons.append(px)
            depths.append(centre[ok, 2])
            colours.append(shade[:, None] * (0.5 * base + 0.5 * 255))
        if not polygons:
            return frame_bgr
        px, depth, colour = np.concatenate(polygons), np.concatenate(depths), np.concatenate(colours)
        finite = np.isfinite(px).all(axis=(1, 2)) & (np.abs(px) < 1e5).all(axis=(1, 2))
        order = np.argsort(-depth[finite])  # far first: painter's algorithm
        px, colour = np.round(px[finite][order]).astype(np.int32), colour[finite][order]
        overlay = frame_bgr.copy()
        mask = np.zeros(frame_bgr.shape[:2], np.uint8)
        for tri, c in zip(px, colour):
            cv2.fillConvexPoly(overlay, tri, c.tolist(), cv2.LINE_AA)
            cv2.fillConvexPoly(mask, tri, 255)
        blend = cv2.addWeighted(overlay, self.opacity, frame_bgr, 1 - self.opacity, 0)
        np.copyto(frame_bgr, blend, where=mask[..., None].astype(bool))
        return frame_bgr


def draw_status(frame_bgr: np.ndarray, text: str) -> None:
    """Write a status line (frame number, fps) in the top-left corner, in place."""
    scale = max(frame_bgr.shape[:2]) / 1000.0
    org = (int(10 * scale), int(30 * scale))
    for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(frame_bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour,
                    max(1, int(round(width * scale))), cv2.LINE_AA)


class PreviewWriter:
    """Writes the pipeline's frames with their persons drawn over them to an H.264 video.

    Frames are written at the source's rate; in live mode, frames the pipeline dropped are
    missing from the preview, so it plays faster than real time.
    """

    def __init__(self, path: str | Path, *, fps: float, size: tuple[int, int], camera=None):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            raise ValueError(f"--preview {path}: use a .mp4, .mkv or .mov file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(30)
        self._stream = self._container.add_stream("libx264", rate=rate)
        # Even sizes for 4:2:0 chroma.
        self._stream.width, self._stream.height = size[0] - size[0] % 2, size[1] - size[1] % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "23", "preset": "veryfast"}
        self._started = time.monotonic()
        self.frames = 0
        self.camera = camera
        self._mesh: BodyMeshDrawer | None = None

    def _bodies(self, bgr: np.ndarray, persons: Sequence[Person]) -> None:
        if self.camera is None or not any("poses" in p.arrays for p in persons):
            return
        if self._mesh is None:
            self._mesh = BodyMeshDrawer(self.camera)
        self._mesh.draw(bgr, persons)

    def write(self, frame: Frame) -> None:
        if frame.image is None:
            return
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        self._bodies(bgr, frame.persons)
        bgr = draw_persons(bgr, frame.persons)
        self.frames += 1
        fps = self.frames / max(time.monotonic() - self._started, 1e-6)
        draw_status(bgr, f"frame {frame.index}  {len(frame.persons)} person(s)  {fps:.1f} fps")
        h, w = self._stream.height, self._stream.width
        if bgr.shape[0] != h or bgr.shape[1] != w:
            bgr = cv2.resize(bgr, (w, h)) if abs(bgr.shape[1] - w) > 1 else bgr[:h, :w]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
