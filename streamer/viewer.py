"""Live 3D viewer through Rerun (optional extra ``viewer``: ``pip install 'smplstream[viewer]'``).

Per frame it logs the video frame (JPEG, scaled), each track's 2D keypoints with their
skeleton, and each track's 3D body (a coarse mesh and the SMPL skeleton) in the camera
frame, under a pinhole camera so the 3D view shows the video where the camera sees it.

Entities (Rerun entity paths), all in the camera frame (OpenCV axes: x right, y down,
z forward; the viewer is told so), or in the ``run --output-frame`` (head, world: the same
axes), where ``world/camera`` then carries the camera's pose per frame (``Transform3D``):

- ``world/camera``: the camera intrinsics (``Pinhole``); ``world/camera/image``: the frame;
- ``world/camera/image/track_N``: BlazePose keypoints of track N (``Points2D`` with the
  skeleton as keypoint connections);
- ``world/track_N/skeleton``: SMPL joints (``Points3D`` with bone connections);
- ``world/track_N/mesh``: the posed body, coarse mesh (``Mesh3D``).

Timelines: ``frame`` (source frame index) and ``stream_time`` (the source's timestamp,
where it has one). A track that leaves the picture is cleared.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

import cv2
import numpy as np

from engines.body.joint_sets import BLAZEPOSE33_EDGES, SMPL24_NAMES, SMPL24_PARENTS

from .errors import ConfigError
from .frames import Frame, Person
from .preview import track_colour

log = logging.getLogger("smplstream.viewer")

APPLICATION_ID = "smplstream"
_BLAZEPOSE_CLASS = 1
_SMPL_CLASS = 2


def import_rerun():
    """The ``rerun`` module, or a ConfigError saying how to install it."""
    try:
        import rerun as rr
    except ImportError:
        raise ConfigError("--viewer needs the rerun-sdk package: pip install 'smplstream[viewer]'") from None
    return rr


class RerunViewer:
    """Streams the pipeline's frames to a Rerun viewer and/or an ``.rrd`` file.

    ``spawn`` starts a viewer (or joins one already listening on ``port``); ``connect`` is a
    Rerun gRPC URL (``rerun+http://HOST:9876/proxy``) of a running viewer; ``save`` an
    ``.rrd`` path (headless). ``camera`` (a :class:`calibration.camera.Camera`) gives the
    pinhole; ``image_scale`` shrinks logged frames (they dominate the data rate); ``mesh``
    and ``skeleton`` choose how bodies are shown.
    """

    def __init__(self, *, spawn: bool = False, connect: str | None = None, save: str | None = None,
                 camera=None, image_scale: float = 0.5, jpeg_quality: int = 80, mesh: bool = True,
                 skeleton: bool = True, port: int = 9876):
        if not (spawn or connect or save):
            raise ConfigError("the viewer needs somewhere to send data: --viewer or --viewer-save FILE.rrd")
        if save is not None and not str(save).endswith(".rrd"):
            raise ConfigError(f"--viewer-save {save}: use a file name ending in .rrd")
        if not 0 < image_scale <= 1:
            raise ConfigError(f"viewer image scale must be in (0, 1], got {image_scale}")
        if spawn and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ConfigError("--viewer: no display to open a viewer on (DISPLAY is not set); use --viewer-save "
                              "FILE.rrd, or --viewer rerun+http://HOST:9876/proxy for a viewer on another machine")
        rr = import_rerun()
        self.rr = rr
        self.camera = camera
        self.image_scale = image_scale
        self.jpeg_quality = int(jpeg_quality)
        self.mesh, self.skeleton = mesh, skeleton
        self._mesh_drawer = None
        self._tracks: set[int] = set()
        self._pinhole_size: tuple[int, int] | None = None
        self.frames = 0
        self.rec = rr.RecordingStream(APPLICATION_ID)
        sinks = []
        try:
            if spawn:
                rr.spawn(port=port, connect=False)
                connect = connect or f"rerun+http://127.0.0.1:{port}/proxy"
            if connect:
                sinks.append(rr.GrpcSink(connect))
            if save:
                sinks.append(rr.FileSink(str(save)))
            self.rec.set_sinks(*sinks)
        except Exception as exc:  # rerun raises several kinds (spawn failure, bad URL, unwritable file)
            raise ConfigError(f"cannot start the Rerun viewer: {exc}") from None
        self._log_static()

    def _log_static(self) -> None:
        rr = self.rr
        self.rec.log("world", rr.ViewCoordinates.RDF, static=True)
        bones_2d = [(int(a), int(b)) for a, b in BLAZEPOSE33_EDGES]
        bones_3d = [(j, p) for j, p in enumerate(SMPL24_PARENTS) if p >= 0]
        self.rec.log("/", rr.AnnotationContext([
            rr.ClassDescription(info=rr.AnnotationInfo(id=_BLAZEPOSE_CLASS, label="blazepose33"),
                                keypoint_connections=bones_2d),
            rr.ClassDescription(info=rr.AnnotationInfo(id=_SMPL_CLASS, label="smpl24"),
                                keypoint_annotations=[rr.AnnotationInfo(id=i, label=n) for i, n in enumerate(SMPL24_NAMES)],
                                keypoint_connections=bones_3d),
        ]), static=True)

    def _log_pinhole(self, width: int, height: int) -> None:
        if self._pinhole_size == (width, height):
            return
        self._pinhole_size = (width, height)
        if self.camera is not None:
            K = np.asarray(self.camera.K, np.float64).copy()
            K[:2] *= width / float(self.camera.width)
        else:  # no camera: a 63-degree pinhole, as the run assumes
            f = 0.5 * width / np.tan(np.radians(63.0) / 2)
            K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
        self.rec.log("world/camera", self.rr.Pinhole(image_from_camera=K, resolution=[width, height],
                                                    camera_xyz=self.rr.ViewCoordinates.RDF,
                                                    image_plane_distance=1.0), static=True)

    def write(self, frame: Frame) -> None:
        """Log one frame: image, keypoints and bodies of its persons."""
        rr, rec = self.rr, self.rec
        rec.set_time("frame", sequence=int(frame.index))
        if frame.stream_time is not None:
            rec.set_time("stream_time", duration=float(frame.stream_time))
        s = self.image_scale
        if frame.image is not None:
            h, w = frame.image.shape[:2]
            size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
            small = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA) if s != 1 else frame.image
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if ok:
                self._log_pinhole(*size)
                rec.log("world/camera/image", rr.EncodedImage(contents=jpeg.tobytes(), media_type="image/jpeg"))
            s = size[0] / float(w)
        elif self._pinhole_size is None:
            self._log_pinhole(max(1, int(round(frame.width * s))), max(1, int(round(frame.height * s))))
        if frame.camera_pose is not None:  # --output-frame head/world: the camera moves in the 3D view
            pose = frame.camera_pose
            rec.log("world/camera", rr.Transform3D(mat3x3=np.asarray(pose["rotation"], np.float32),
                                                   translation=pose.get("position") or [0.0, 0.0, 0.0]))
        present = set()
        for person in frame.persons:
            tid = int(person.track_id)
            present.add(tid)
            colour = track_colour(tid)[::-1]  # BGR -> RGB
            kp = person.arrays.get("keypoints_blazepose33")
            if kp is not None:
                kp = np.asarray(kp, np.float32)
                good = np.nonzero(kp[:, 2] >= 0.3)[0]
                rec.log(f"world/camera/image/track_{tid}",
                        rr.Points2D(kp[good, :2] * s, keypoint_ids=good, class_ids=_BLAZEPOSE_CLASS,
                                    colors=colour, radii=-2.0))  # negative radius: screen pixels
            joints = person.arrays.get("joints")
            if self.skeleton and joints is not None:
                rec.log(f"world/track_{tid}/skeleton",
                        rr.Points3D(np.asarray(joints, np.float32), keypoint_ids=np.arange(24), class_ids=_SMPL_CLASS,
                                    colors=colour, radii=0.02))
        if self.mesh:
            self._log_meshes(frame.persons)
        for gone in self._tracks - present:
            rec.log(f"world/track_{gone}", rr.Clear(recursive=True))
            rec.log(f"world/camera/image/track_{gone}", rr.Clear(recursive=True))
        self._tracks = present
        self.frames += 1

    def _log_meshes(self, persons: Sequence[Person]) -> None:
        with_body = [p for p in persons if "poses" in p.arrays]
        if not with_body:
            return
        if self._mesh_drawer is None:
            from .preview import BodyMeshDrawer

            self._mesh_drawer = BodyMeshDrawer(self.camera)
        drawer = self._mesh_drawer
        for person, verts in zip(with_body, drawer.vertices(with_body)):
            colour = track_colour(int(person.track_id))[::-1]
            self.rec.log(f"world/track_{int(person.track_id)}/mesh",
                         self.rr.Mesh3D(vertex_positions=verts.astype(np.float32), triangle_indices=drawer.faces,
                                        vertex_normals=_vertex_normals(verts, drawer.faces),
                                        albedo_factor=(*colour, 200)))

    def close(self) -> None:
        """Flush everything to the sinks (the .rrd file is complete afterwards). A viewer that
        could not be reached is a warning, not a failed run: the other outputs are written."""
        try:
            self.rec.flush(timeout_sec=10.0)
            self.rec.disconnect()
        except Exception as exc:  # rerun raises RuntimeError for an unreachable gRPC viewer
            log.warning("viewer: could not deliver the recording: %s", exc)
            return
        log.info("viewer: logged %d frame(s)", self.frames)


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (the viewer shades with them)."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros_like(verts)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return (out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-12)).astype(np.float32)
