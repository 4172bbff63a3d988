"""``run --source A --source B ... --rig rig.yaml``: one body per person from every calibrated
camera of a multi-camera rig (``docs/multi-camera.md``).

- :class:`MultiViewRig`: the rig file (``smplstream calibrate-rig``) read for the run: each
  camera scaled to its source's frame size, and where every other camera sits relative to
  the first (the *reference*: the lift and the fit work in its frame).
- :class:`MultiViewKeypointsStage`: the keypoints stage run on every view of a
  :class:`~streamer.multi_source.ViewSet` (one tracker per camera, the networks shared), then
  the people of the other views matched to the reference view's
  (:class:`engines.perception.cross_view.CrossViewMatcher`: epipolar geometry, and the
  agreement of each view's world landmarks turned into the reference camera's axes). Each reference person carries
  ``keypoints_views_blazepose33`` (V-1, 33, 3): their keypoints in the other views, zeros where
  a camera does not see them (or has no frame this step), and ``world_views_blazepose33``
  (V-1, 33, 3): the landmark network's world landmarks of them from those views' crops.
- the refine stage (:class:`streamer.refine_stage.RefineStage` with ``rig``) moves each lift
  onto the hips triangulated from all views (the lift cannot know its depth) and fits it to
  every view's keypoints and world landmarks (:mod:`engines.refinement.multiview`).
- a person whom the reference camera does not see but another camera does (a *view-only*
  person, track id ``VIEW_ONLY_IDS * v + their track id in camera v``, or the id the
  reference camera gave them if it saw them before; one who walks into the reference view
  keeps their view-only id) is lifted and fitted
  from the first camera ``v`` that sees them, in its frame, with the other cameras that see
  them as its other views (:meth:`MultiViewRig.seen_from`; seen by ``v`` alone, exactly as a
  single camera would), and moved into the reference frame when released
  (:meth:`MultiViewRig.finish_view_only`): their keypoints there become their row of
  ``keypoints_views_blazepose33``.
- :class:`RigFrameStage`: the outputs moved from the reference camera's frame into the rig's
  when the rig file puts the first camera anywhere but at its origin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from calibration.camera import Camera

from .errors import ConfigError
from .frames import Frame, Person
from .graph import Stage

if TYPE_CHECKING:
    from engines.perception.cross_view import CrossViewMatcher

log = logging.getLogger("smplstream.multi_view")

VIEWS_KEY = "keypoints_views_blazepose33"
VIEWS_WORLD_KEY = "world_views_blazepose33"
#: ``Person.handover`` key of a view-only person: the camera they are lifted and fitted from.
VIEW_ONLY = "view"
#: A view-only person's track id is this times their camera's index plus their id there.
VIEW_ONLY_IDS = 1_000_000
KEYPOINTS = "keypoints_blazepose33"


@dataclass
class MultiViewRig:
    """The cameras of a rig for one run: ``cameras`` (the reference first) at the sources'
    frame sizes, ``names``, ``poses``: per other camera ``(R, t)`` with ``p_cam = R p_ref + t``,
    and the reference camera's own pose in the rig frame (``rotation``, ``translation``)."""

    cameras: list[Camera]
    names: list[str]
    poses: list[tuple[np.ndarray, np.ndarray]]
    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def load(cls, path: str, sizes: list[tuple[int, int]]) -> "MultiViewRig":
        """The rig file at ``path`` for sources of frame ``sizes`` (one per camera, in the
        file's order). Raises ConfigError naming what is wrong."""
        from calibration.fileio import FileFormatError
        from calibration.rig_calibration import load_multi_camera_rig, poses_from_first

        if not Path(path).is_file():
            raise ConfigError(f"--rig {path}: no such file (make one with `smplstream calibrate-rig`)")
        try:
            rig = load_multi_camera_rig(path)
        except (FileFormatError, OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"--rig {path}: not a multi-camera rig file ({exc}); several --source need the "
                              "rig `smplstream calibrate-rig` writes") from None
        if len(rig) != len(sizes):
            raise ConfigError(f"--rig {path}: the rig has {len(rig)} cameras but {len(sizes)} --source were given "
                              "(one --source per camera, in the rig file's order)")
        cameras = []
        for c, (w, h) in zip(rig, sizes):
            cam = c.camera
            if (cam.width, cam.height) != (w, h):
                if abs(cam.width / cam.height - w / h) > 0.01:
                    raise ConfigError(f"--rig {path}: camera {c.name} was calibrated at {cam.width}x{cam.height} but "
                                      f"its source delivers {w}x{h} (another aspect ratio: is the order of --source "
                                      "the rig's?)")
                cam = cam.scaled(w, h)
            cameras.append(cam)
        out = cls(cameras, [c.name for c in rig], poses_from_first(rig), np.asarray(rig[0].rotation, np.float64),
                  np.asarray(rig[0].translation, np.float64))
        # Every pair needs a baseline: camera 0 and another for depth, two others to match a
        # person camera 0 misses.
        for a in range(len(rig)):
            for b in range(a + 1, len(rig)):
                if np.linalg.norm(out.between(a, b)[1]) < 1e-3:
                    raise ConfigError(f"--rig {path}: camera {rig[b].name} sits where {rig[a].name} does (no "
                                      "baseline): two views from one place cannot give depth")
        return out

    @property
    def rig_views(self) -> tuple:
        """The other cameras as :class:`engines.refinement.multiview.RigView` (for the fit)."""
        from engines.refinement.multiview import RigView

        return tuple(RigView.from_camera(cam, R, t) for cam, (R, t) in zip(self.cameras[1:], self.poses))

    def to_reference(self, view: int) -> tuple[np.ndarray, np.ndarray]:
        """``(R, t)`` taking camera ``view``'s frame into the reference camera's:
        ``p_ref = R p_view + t``."""
        if view == 0:
            return np.eye(3), np.zeros(3)
        R, t = self.poses[view - 1]
        return R.T, -R.T @ t

    def between(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(R, t)`` taking camera ``a``'s frame into camera ``b``'s."""
        Ra, ta = self.to_reference(a)  # a -> reference
        Rb, tb = self.to_reference(b)
        return Rb.T @ Ra, Rb.T @ (ta - tb)

    def others(self, v: int) -> list[int]:
        """The cameras besides ``v``, in the rig's order: the other views of a fit in ``v``'s frame."""
        return [w for w in range(len(self.cameras)) if w != v]

    def seen_from(self, v: int) -> "MultiViewRig":
        """The rig with camera ``v`` as its reference, the others (:meth:`others`) after it:
        a view-only person of camera ``v`` is placed and fitted in it, as the reference
        camera's people are in this one."""
        if v == 0:
            return self
        others = self.others(v)
        R, t = self.to_reference(v)
        return MultiViewRig([self.cameras[v]] + [self.cameras[w] for w in others],
                            [self.names[v]] + [self.names[w] for w in others], [self.between(v, w) for w in others],
                            self.rotation @ R, self.rotation @ t + self.translation)

    def finish_view_only(self, person: Person) -> None:
        """A view-only person's arrays moved from their camera's frame into the reference's
        (in place): the body and landmarks turned and moved; their keypoints, box and COCO
        points (their camera's pixels, not the reference's) leave, the keypoints for their row
        of ``keypoints_views_blazepose33``, whose rows (in :meth:`seen_from`'s order until
        now) go into the reference's order of the cameras."""
        from .output_frame import transform_arrays

        v = int(person.handover.pop(VIEW_ONLY))
        R, t = self.to_reference(v)
        arrays = transform_arrays(person.arrays, R, t)
        views = np.zeros((len(self.cameras) - 1, 33, 3), np.float32)
        views_world = np.zeros_like(views)
        theirs, theirs_world = arrays.get(VIEWS_KEY), arrays.get(VIEWS_WORLD_KEY)
        for row, w in enumerate(self.others(v)):
            if w and theirs is not None:
                views[w - 1], views_world[w - 1] = theirs[row], theirs_world[row]
        if KEYPOINTS in arrays:
            views[v - 1] = arrays.pop(KEYPOINTS)
        if "world_blazepose33" in person.arrays:  # as the network gave them, as for anyone matched
            views_world[v - 1] = person.arrays["world_blazepose33"]
        for key in ("box_xyxy", "keypoints_coco17"):
            arrays.pop(key, None)
        arrays[VIEWS_KEY], arrays[VIEWS_WORLD_KEY] = views, views_world
        person.arrays = arrays

    @property
    def reference_at_origin(self) -> bool:
        return bool(np.allclose(self.rotation, np.eye(3), atol=1e-9) and np.allclose(self.translation, 0.0, atol=1e-9))

    def view_keypoints(self, persons: list[Person], key: str = VIEWS_KEY) -> torch.Tensor | None:
        """(P, V-1, 33, 3) the persons' keypoints in the other views (pixels + confidence),
        or None when nobody carries any; ``key`` :data:`VIEWS_WORLD_KEY`: their world
        landmarks there (zeros where a view has none)."""
        rows = [p.arrays.get(key) for p in persons]
        if all(r is None for r in rows):
            return None
        empty = np.zeros((len(self.cameras) - 1, 33, 3), np.float32)
        return torch.from_numpy(np.stack([empty if r is None else np.asarray(r, np.float32) for r in rows]))

    def place(self, body, x: torch.Tensor, trans: torch.Tensor, reference: torch.Tensor,
              views: torch.Tensor | None) -> torch.Tensor:
        """The lifts' translations (P, 3) moved so that each body's hips land on the point
        triangulated from every view that sees them; ``reference`` (P, 33, 3) pixels in the
        reference view, ``views`` (P, V-1, 33, 3) in the others. A person seen by one view
        alone (or by rays too close to parallel) keeps the lift's own place."""
        if views is None:
            return trans
        from engines.refinement.multiview import place_on_triangulated_hips

        normalised, cams = [], []
        for v, cam in enumerate(self.cameras):
            kp = (reference if v == 0 else views[:, v - 1]).numpy().astype(np.float64)
            normalised.append(torch.from_numpy(cam.normalize_keypoints(kp).astype(np.float32)))  # undistorted, focal 1
            R, t = (np.eye(3), np.zeros(3)) if v == 0 else self.poses[v - 1]
            cams.append((torch.eye(3), torch.as_tensor(R, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)))
        return place_on_triangulated_hips(body, x, trans, normalised, cams)


class MultiViewKeypointsStage(Stage):
    """The keypoints stage of a rig (module doc): ``trackers`` one
    :class:`engines.perception.person_keypoints.PersonKeypoints` per camera, ``rig`` the
    :class:`MultiViewRig`. The reference view's people are the frame's persons; each carries
    its keypoints in the other views. A person seen by other cameras but not the reference is a
    view-only person of the first camera that sees them (module doc). Counts per other view
    the reference people matched there (``matched``), the people it saw whom the reference
    view did not (``unmatched``), and of those the view-only persons it gave (``view_only``).
    ``nice``: as :class:`~streamer.keypoints_stage.KeypointsStage`'s."""

    name = "keypoints"

    def __init__(self, trackers: list, rig: MultiViewRig, matcher=None, nice: int = 0):
        from engines.perception.cross_view import CrossViewMatcher

        if len(trackers) != len(rig.cameras):
            raise ValueError("MultiViewKeypointsStage: one tracker per camera")
        self.trackers = trackers
        self.rig = rig
        self.nice = nice
        self.matcher = matcher or CrossViewMatcher(rig.poses)
        self.matched = [0] * (len(rig.cameras) - 1)
        self.unmatched = [0] * (len(rig.cameras) - 1)
        self.view_only = [0] * (len(rig.cameras) - 1)
        # Between other cameras (a before b): one view-only person seen by both is given once.
        self._between: dict[tuple[int, int], CrossViewMatcher] = {}
        # (camera, track id there) -> the id the person is published under: one person keeps
        # one id when they walk into the reference camera's view or out of it.
        self._published: dict[tuple[int, int], int] = {}

    @property
    def background_cpu_seconds(self) -> float:
        return sum(t.background_cpu_seconds for t in self.trackers)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        if any(self.matched) or any(self.unmatched):
            log.info("people matched across views: %s", ", ".join(
                f"{n}: {m} matched, {u} seen there alone ({o} lifted from there)" for n, m, u, o in
                zip(self.rig.names[1:], self.matched, self.unmatched, self.view_only)))

    def process(self, frame: Frame) -> Frame:
        views = getattr(frame, "views", None) or [frame]
        seen = []
        for tracker, view in zip(self.trackers, views):
            seen.append([] if view is None else tracker.process(view.image, view.index))
        normalised = [{p.track_id: cam.normalize_keypoints(np.asarray(p.keypoints33, np.float64)) for p in people}
                      for cam, people in zip(self.rig.cameras, seen)]
        matches = []
        if len(views) > 1:
            landmarks = [camera_axis_landmarks(people, found) for people, found in zip(seen, normalised)]
            matches = self.matcher.match(normalised[0], normalised[1:], reference_landmarks=landmarks[0],
                                         view_landmarks=landmarks[1:])
        published = self._reference_ids([p.track_id for p in seen[0]], matches)
        frame.persons = []
        for p in seen[0]:
            arrays = {"box_xyxy": np.asarray(p.box, np.float32),
                      KEYPOINTS: np.asarray(p.keypoints33, np.float32),
                      "keypoints_coco17": np.asarray(p.coco17, np.float32),
                      "world_blazepose33": np.asarray(p.world33, np.float32)}
            if matches:
                arrays[VIEWS_KEY] = np.zeros((len(self.rig.cameras) - 1, 33, 3), np.float32)
                arrays[VIEWS_WORLD_KEY] = np.zeros((len(self.rig.cameras) - 1, 33, 3), np.float32)
            frame.persons.append(Person(track_id=published[p.track_id], score=float(p.score), arrays=arrays))
        by_id = {p.track_id: person for p, person in zip(seen[0], frame.persons)}
        for v, found in enumerate(matches):
            others = {p.track_id: p for p in seen[v + 1]}
            for view_id, ref_id in found.items():
                by_id[ref_id].arrays[VIEWS_KEY][v] = np.asarray(others[view_id].keypoints33, np.float32)
                if others[view_id].world33 is not None:
                    by_id[ref_id].arrays[VIEWS_WORLD_KEY][v] = np.asarray(others[view_id].world33, np.float32)
            self.matched[v] += len(found)
            self.unmatched[v] += len(others) - len(found)
        if matches:
            self._add_view_only(frame, seen, normalised, matches)
        if hasattr(frame, "views"):
            frame.views = []  # the other views' images are not needed downstream
        return frame


    def _reference_ids(self, ids: list[int], matches: list[dict[int, int]]) -> dict[int, int]:
        """The ids the reference camera's people are published under: their own, or, for one
        seen before by another camera alone (a view-only person), the id they had then; and
        each match remembered, so a person who leaves the reference view keeps their id."""
        out: dict[int, int] = {}
        for tid in ids:
            known = self._published.get((0, tid))
            if known is None:
                # A view-only person now seen by the reference camera too: matched in a view
                # where they were given before.
                earlier = [self._published.get((v + 1, view_id)) for v, found in enumerate(matches)
                           for view_id, ref_id in found.items() if ref_id == tid]
                known = next((i for i in earlier if i is not None), tid)
            out[tid] = known
        if len(set(out.values())) < len(out):  # two people claimed one id: both keep their own
            out = {tid: tid if list(out.values()).count(i) > 1 else i for tid, i in out.items()}
        for tid, i in out.items():
            self._published[(0, tid)] = i
        for v, found in enumerate(matches):
            for view_id, ref_id in found.items():
                self._published[(v + 1, view_id)] = out[ref_id]
        return out

    def _add_view_only(self, frame: Frame, seen: list, normalised: list, matches: list) -> None:
        """The persons seen by other cameras but not the reference (module doc), each from the
        first camera that sees them: a person another camera before it gives already (matched
        by epipolar geometry between the two) is not given again, but joins that person's
        keypoints and landmarks in the other views (in :meth:`MultiViewRig.seen_from`'s order)."""
        from engines.perception.cross_view import CrossViewMatcher

        V = len(self.rig.cameras)
        given: dict[int, dict[int, Person]] = {}  # camera -> its view-only persons by their id there
        for v in range(1, V):
            alone = {p.track_id: p for p in seen[v] if p.track_id not in matches[v - 1]}
            for a, persons in given.items():
                if not persons or not alone:
                    continue
                if (a, v) not in self._between:
                    self._between[(a, v)] = CrossViewMatcher([self.rig.between(a, v)])
                (twice,) = self._between[(a, v)].match({i: normalised[a][i] for i in persons},
                                                       [{i: normalised[v][i] for i in alone}])
                row = self.rig.others(a).index(v)
                for i, first in twice.items():
                    p = alone.pop(i)
                    persons[first].arrays[VIEWS_KEY][row] = np.asarray(p.keypoints33, np.float32)
                    persons[first].arrays[VIEWS_WORLD_KEY][row] = np.asarray(p.world33, np.float32)
            given[v] = {}
            in_frame = {person.track_id for person in frame.persons}
            for tid, p in alone.items():
                # Someone the reference camera saw before keeps the id they had there.
                published = self._published.get((v, tid))
                if published is None or published in in_frame:
                    published = VIEW_ONLY_IDS * v + tid
                self._published[(v, tid)] = published
                in_frame.add(published)
                person = Person(track_id=published, score=float(p.score),
                                arrays={"box_xyxy": np.asarray(p.box, np.float32),
                                        KEYPOINTS: np.asarray(p.keypoints33, np.float32),
                                        "keypoints_coco17": np.asarray(p.coco17, np.float32),
                                        "world_blazepose33": np.asarray(p.world33, np.float32),
                                        VIEWS_KEY: np.zeros((V - 1, 33, 3), np.float32),
                                        VIEWS_WORLD_KEY: np.zeros((V - 1, 33, 3), np.float32)})
                person.handover[VIEW_ONLY] = v
                frame.persons.append(person)
                given[v][tid] = person
            self.view_only[v - 1] += len(alone)


def camera_axis_landmarks(people: list, normalised: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Each person's world landmarks (33, 3) turned from the landmark network's crop frame into
    its camera's axes (:func:`engines.diffusion.features.world_landmarks_to_camera`), by track
    id, for the cross-view association; people without landmarks are left out."""
    from engines.diffusion.features import world_landmarks_to_camera

    people = [p for p in people if getattr(p, "world33", None) is not None]
    if not people:
        return {}
    world = torch.from_numpy(np.stack([np.asarray(p.world33, np.float32) for p in people]))
    kp = torch.from_numpy(np.stack([normalised[p.track_id] for p in people]).astype(np.float32))
    turned = world_landmarks_to_camera(world, kp).numpy()
    return {p.track_id: turned[i] for i, p in enumerate(people)}


class RigFrameStage(Stage):
    """Moves every person from the reference camera's frame into the rig's
    (``p_rig = rotation p_ref + translation``), for a rig whose first camera is not at its
    origin."""

    name = "rig_frame"

    def __init__(self, rig: MultiViewRig):
        self.rig = rig

    def process(self, frame: Frame) -> Frame:
        from .output_frame import apply_pose

        apply_pose(frame, self.rig.rotation, self.rig.translation,
                   {"frame": "rig", "rotation": np.round(self.rig.rotation, 6).tolist(),
                    "position": np.round(self.rig.translation, 6).tolist()})
        return frame


def check_multi_view_options(config) -> None:
    """Options of a multi-camera run that cannot work (ConfigError), before anything opens:
    ``config.more_sources`` (the second and later ``--source``) need a multi-camera ``--rig``
    and the camera output frame; ``--source-offset`` needs several sources, one each."""
    more = list(getattr(config, "more_sources", None) or [])
    offsets = list(getattr(config, "source_offsets", None) or [])
    if not more:
        if offsets:
            raise ConfigError("--source-offset aligns several sources: give --source more than once")
        if config.rig and _is_multi_camera_rig(config.rig):
            raise ConfigError(f"--rig {config.rig} is a multi-camera rig: give one --source per camera, in its order")
        return
    if not config.rig:
        raise ConfigError("several --source need --rig RIG.yaml: where each camera is (make it with "
                          "`smplstream calibrate-rig`)")
    if config.camera:
        raise ConfigError("--camera with several --source: the rig file holds every camera's intrinsics; drop --camera")
    if getattr(config, "output_frame", "camera") != "camera":
        raise ConfigError(f"--output-frame {config.output_frame} with several --source is not supported: the "
                          "outputs are in the rig's frame")
    from .output_frame import check_output_frame

    check_output_frame("camera", None, config.imu, config.camera_pitch)  # --imu, --camera-pitch: world only
    if offsets and len(offsets) != 1 + len(more):
        raise ConfigError(f"--source-offset: give one per --source ({1 + len(more)}), or none; got {len(offsets)}")


def _is_multi_camera_rig(path: str) -> bool:
    from calibration.fileio import read_fields

    try:
        return str(read_fields(path).get("rig", "")) == "multi_camera"
    except Exception:  # noqa: BLE001 - a bad file is reported by whoever reads it for real
        return False


def open_rig_sources(config, live: bool | None, sources=None):
    """The synchronised sources of a multi-camera run and its rig, for ``config``'s
    ``source``, ``more_sources``, ``source_offsets`` and ``rig``: ``(sources, rig)``.
    ``sources``: a :class:`~streamer.multi_source.SynchronisedSources` opened already."""
    from .multi_source import SynchronisedSources, open_sources

    if sources is None:
        sources = open_sources([config.source, *config.more_sources], live=live, offsets=config.source_offsets,
                               width=config.width, height=config.height, fps=config.fps)
    elif not isinstance(sources, SynchronisedSources):
        raise ConfigError("several --source: the source given must be synchronised sources")
    try:
        rig = MultiViewRig.load(config.rig, [s.size for s in sources.sources])
    except BaseException:
        sources.close()
        raise
    log.info("rig %s: %s; the outputs are in %s", config.rig, ", ".join(
        f"{n} ({s.name})" for n, s in zip(rig.names, sources.sources)),
        f"{rig.names[0]}'s frame" if rig.reference_at_origin else "the rig's frame")
    return sources, rig
