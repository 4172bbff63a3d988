"""Per-frame person keypoints with stable track ids (detect, track, landmarks).

`PersonKeypoints.process(frame_rgb, frame_index) -> list[TrackedPerson]` is the
logic of the pipeline's detect/track/keypoints stages, free of threads and
queues. As in BlazePose, people are followed by their landmarks: each person's
landmarks give the region of interest (ROI) for the next frame, so the
detector runs only every `detect_every` processed frames (to find newcomers) or when a
person was lost. All persons of a frame go through the landmark network as one
batch. The tracker (`engines.perception.tracking.Tracker`) gives stable ids and keeps
briefly lost people for re-identification.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from engines.perception.appearance import appearance_descriptor
from engines.perception.boxes import containment_matrix, iou_matrix
from engines.perception.pose_detector import PoseDetection, PoseDetector
from engines.perception.pose_landmarks import PoseLandmarker, PoseLandmarks, Roi
from engines.perception.tracking import Tracker, TrackState
from engines.runtime.threads import lower_thread_priority


@dataclass
class TrackedPerson:
    """One person in one frame.

    Attributes:
        track_id: stable integer id across frames.
        score: pose presence probability from the landmark model.
        box: (4,) x1, y1, x2, y2 pixels around the confident landmarks.
        keypoints33: (33, 3) BlazePose landmarks: pixel x, y, confidence.
        coco17: (17, 3) the COCO-17 subset, same columns.
        world33: (33, 3) metric landmarks, metres, origin between the hips.
        roi: the rotated square the landmarks were computed in.
    """

    track_id: int
    score: float
    box: np.ndarray
    keypoints33: np.ndarray
    coco17: np.ndarray
    world33: np.ndarray
    roi: Roi


@dataclass
class _Candidate:
    """Tracker input built from one landmark result. Its ``appearance`` (for re-identification)
    is computed from ``frame`` only when the tracker asks, during the update that sees it."""

    box: np.ndarray
    score: float
    landmarks: PoseLandmarks
    frame: np.ndarray | None = None  # the frame, until the tracker's update is done

    @functools.cached_property
    def appearance(self) -> np.ndarray | None:
        if self.frame is None:
            return None
        return appearance_descriptor(self.frame, self.landmarks.keypoints33)


class _BackgroundDetector:
    """Runs detector calls on a thread of their own, one at a time (live mode).

    ``submit`` starts a call on a frame unless one is still running; ``collect`` returns the
    detections of a finished call once. ONNX Runtime releases the GIL, so the detector runs
    on the other core while the keypoints stage goes on with the landmarks. ``nice``: the
    thread is scheduled this many nice levels lower, so that where the cores are contended
    the frame's path gets them first.
    """

    def __init__(self, nice: int = 0) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector",
                                        initializer=lower_thread_priority, initargs=(nice,))
        self._pending: Future | None = None
        self.cpu_seconds = 0.0  # thread CPU time of the finished calls

    def submit(self, detect: Callable[[np.ndarray], list[PoseDetection]], image: np.ndarray) -> bool:
        """Start ``detect(image)``; False (nothing started) while a call is still running."""
        if self._pending is not None and not self._pending.done():
            return False
        if self._pending is not None:  # finished but not collected: superseded
            self._pending.exception()
        self._pending = self._pool.submit(self._timed, detect, image)
        return True

    def _timed(self, detect, image):
        t0 = time.thread_time()
        try:
            return detect(image)
        finally:
            self.cpu_seconds += time.thread_time() - t0

    def collect(self) -> list[PoseDetection] | None:
        """Detections of the last call if it has finished since the last ``collect``, else
        None. An error raised in the call is raised here."""
        if self._pending is None or not self._pending.done():
            return None
        future, self._pending = self._pending, None
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = None


#: A newcomer's landmark box that overlaps a kept person's this much (intersection over the
#: smaller box) is the kept person seen again, not someone new.
NEW_PERSON_CONTAINMENT = 0.6
#: A detection whose region overlaps a followed person's region this much (IoU) is that person.
FOLLOWED_IOU = 0.4
#: ... and so is one inside or around it (NEW_PERSON_CONTAINMENT) whose centre lies within
#: this fraction of the larger region's size from the other's (on the clip: 0.07-0.27).
SAME_PERSON_CENTRE = 0.3


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _roi_box(roi: Roi) -> np.ndarray:
    h = roi.size / 2
    return np.array([roi.center[0] - h, roi.center[1] - h, roi.center[0] + h, roi.center[1] + h])


class PersonKeypoints:
    """Detect, follow and key-point every person in a video, frame by frame.

    Args:
        detect_every: run the detector at least every this many frames (to find
            people who enter); it also runs on every frame while nobody is
            followed or a recently lost person is being searched for.
        min_detection_score: detector score to start following a person.
        min_presence: landmark pose-presence probability to keep a person.
        max_persons: follow at most this many people. People already followed keep their
            place; when more new people are found than there is room for, the largest in
            the image (by the area of their landmarks' box: usually the nearest) are taken
            and the others left out (counted in ``persons_left_out``).
        min_roi_size: drop ROIs smaller than this many pixels (too far away to
            give useful landmarks).
        search_frames: after losing a person, run the detector on every frame
            for this many frames to find them again (same id if still near).
        detector_tile_size: also run the detector on overlapping tiles of this
            many pixels to find small (far) people; costs one detector run per
            tile on detector frames (see `PoseDetector`).
        tracker: a `Tracker` (default: reports a new person from their second
            frame, which hides one-frame false detections, and keeps a lost person
            dormant for `dormant_frames` to give their id back to them).
        dormant_frames: see `Tracker` (0: lost people are forgotten after a second).
        detector, landmarker: perception engines (default: bundled models on CPU).
        providers, intra_op_threads: ONNX Runtime settings for the default engines.
        backend: engine backend of the default detector and landmarker ("auto",
            "onnxruntime", ...; see `engines.runtime`).
        background_detection: while people are followed, run the detector on a thread of
            its own and add the people it finds to the first frame after it is done (live
            mode: a detector frame then costs the landmark path nothing, at the price of
            newcomers joining a frame or two later and results that depend on timing).
            When nobody is followed the detector runs in line, as it must find someone.
        background_nice: how many nice levels below the caller the background detector's
            thread runs (Linux; live mode: `BACKGROUND_DETECTOR_NICE`).
        landmark_sessions: split a frame's landmark crops over this many network sessions
            on as many threads (`PoseLandmarker`'s ``sessions``; live mode: 2).
        detector_sweep_calls: with ``background_detection`` and tiles, a look at every tile
            is spread over this many regular detector calls: each looks at the whole frame
            and the next share of the tiles, in turn (live mode:
            `BACKGROUND_DETECTOR_SWEEP_CALLS`). A tiled look costs one network run per tile
            (9 for the 4-person synthetic camera), about 10 ms of CPU a frame at the
            regular cadence, taken from the frame's own work on two cores.
    """

    def __init__(
        self,
        detect_every: int = 10,
        min_detection_score: float = 0.5,
        min_presence: float = 0.5,
        max_persons: int = 6,
        min_roi_size: float = 32.0,
        search_frames: int = 15,
        detector_tile_size: int | None = None,
        tracker: Tracker | None = None,
        detector: PoseDetector | None = None,
        landmarker: PoseLandmarker | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        backend: str = "auto",
        background_detection: bool = False,
        background_nice: int = 0,
        dormant_frames: int = 0,
        landmark_sessions: int = 1,
        detector_sweep_calls: int = 1,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"PersonKeypoints: detect_every must be >= 1, got {detect_every}")
        if detector_sweep_calls < 1:
            raise ValueError(f"PersonKeypoints: detector_sweep_calls must be >= 1, got {detector_sweep_calls}")
        self.detector_sweep_calls = int(detector_sweep_calls)
        self._sweep_next = 0  # the first tile of the next background look
        self.detect_every = int(detect_every)
        self.min_presence = float(min_presence)
        self.max_persons = int(max_persons)
        self.min_roi_size = float(min_roi_size)
        self.search_frames = int(search_frames)
        # The detector keeps enough candidates for every person that may be followed.
        self.detector = detector or PoseDetector(
            min_score=min_detection_score, tile_size=detector_tile_size, max_detections=max(10, 2 * self.max_persons),
            providers=providers, intra_op_threads=intra_op_threads, backend=backend,
        )
        self.landmarker = landmarker or PoseLandmarker(providers=providers, intra_op_threads=intra_op_threads,
                                                       backend=backend, sessions=landmark_sessions)
        self.tracker = tracker or Tracker(high_score=min_presence, low_score=min(0.1, min_presence), min_hits=2,
                                          dormant_frames=dormant_frames)
        self._rois: list[Roi] = []
        self._last_detect: int | None = None  # call number of the last regular detection
        self._last_index: int | None = None
        self._calls = 0
        self.detector_runs = 0
        # People found but not followed because max_persons were already taken (summed over
        # frames), and the frames where that happened: live mode's overload report.
        self.persons_left_out = 0
        self.frames_over_cap = 0
        # Landmark crops of regions not followed (a newcomer's, or nobody's), and how many of
        # them gave a person kept: what looking for newcomers costs on the frame's path.
        self.newcomer_crops = 0
        self.newcomer_crops_kept = 0
        self._background_nice = int(background_nice)
        self._background = _BackgroundDetector(self._background_nice) if background_detection else None

    @property
    def background_cpu_seconds(self) -> float:
        """Thread CPU time spent on helper threads so far: background detector calls and
        the landmark network's extra sessions (0 without them)."""
        detector = self._background.cpu_seconds if self._background is not None else 0.0
        return detector + float(getattr(self.landmarker, "pool_cpu_seconds", 0.0))

    def reset(self) -> None:
        """Forget followed people and track ids (e.g. on a new video)."""
        self._rois = []
        self._last_detect = None
        self._last_index = None
        self._calls = 0
        self._sweep_next = 0
        self.tracker.reset()
        if self._background is not None:
            self._background.close()
            self._background = _BackgroundDetector(self._background_nice)

    def close(self) -> None:
        """Stop the background detector thread, if any."""
        if self._background is not None:
            self._background.close()

    def _sweep_share(self, frame_rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The tiles of the next regular background look: the next 1 / ``detector_sweep_calls``
        of the detector's tiles, in turn (all of them with one call)."""
        tiles = self.detector.tiles(frame_rgb.shape[1], frame_rgb.shape[0])
        if not tiles:
            return []
        share = -(-len(tiles) // self.detector_sweep_calls)
        return [tiles[(self._sweep_next + i) % len(tiles)] for i in range(share)]

    def _new_rois(self, detections: list[PoseDetection], carried: list[Roi]) -> list[Roi]:
        """ROIs of detections not already followed: neither overlapping a carried ROI nor
        the same person at another scale (a region inside or around a carried one, the two
        centred alike: within ``SAME_PERSON_CENTRE`` of the larger one's size). The
        detector's region for a followed person is often of another size than the
        landmarks' own (a box inside them, or one twice their size around them): its
        landmarks would find that person again and be dropped as a duplicate, after costing
        a landmark call on the frame's path (measured: docs/performance.md). A smaller
        person off to one side of a larger one, inside that one's square region but not
        centred on it, is still looked at."""
        fresh = [Roi.from_alignment(d.keypoints[0], d.keypoints[1]) for d in detections]
        fresh = [r for r in fresh if r.size >= self.min_roi_size]
        if not fresh or not carried:
            return fresh
        boxes = np.stack([_roi_box(r) for r in fresh])
        followed = np.stack([_roi_box(r) for r in carried])
        iou, contained = iou_matrix(boxes, followed), containment_matrix(boxes, followed)
        centres = np.stack([r.center for r in fresh])[:, None] - np.stack([r.center for r in carried])[None]
        offset = np.linalg.norm(centres, axis=-1)
        larger = np.maximum(np.array([r.size for r in fresh])[:, None], np.array([r.size for r in carried])[None])
        centred = offset < SAME_PERSON_CENTRE * larger
        same = (iou >= FOLLOWED_IOU) | ((contained > NEW_PERSON_CONTAINMENT) & centred)
        return [r for r, row in zip(fresh, same) if not row.any()]

    def process(self, frame_rgb: np.ndarray, frame_index: int) -> list[TrackedPerson]:
        """Keypoints of every followed person in this frame.

        Args:
            frame_rgb: (H, W, 3) uint8 RGB frame.
            frame_index: the frame's index in its stream: the tracker predicts people over
                the frames skipped since the last call (live drops, a reconnect gap).

        Returns:
            Tracked persons of this frame, ordered by track id.
        """
        carried = list(self._rois)
        # The cadence counts calls, not stream frames: in live mode dropped frames would
        # otherwise make every processed frame a detector frame, slowing the stage further.
        self._calls += 1
        # With max_persons followed, nobody the detector finds could be taken on: it rests
        # until someone is lost.
        room = len(carried) < self.max_persons
        due = room and (self._last_detect is None or self._calls - self._last_detect >= self.detect_every)
        # Someone recently lost (the tracker still holds the track) is searched
        # for on every frame for a short while, so they come back under their id.
        searching = room and any(
            t.state == TrackState.LOST and t.time_since_update <= self.search_frames for t in self.tracker.tracks
        )
        new: list[Roi] = []
        # Tiled detection (if configured) only at the regular cadence; the extra searches
        # use one whole-frame view to stay cheap.
        if self._background is not None and carried:
            found = self._background.collect()  # from an earlier frame: people move little
            if found is not None and room:
                new = self._new_rois(found, carried)
            tiles = self._sweep_share(frame_rgb) if due else []
            detect = functools.partial(self.detector.detect_in, tiles=tiles) if due else self.detector.detect_single
            if (due or searching) and self._background.submit(detect, frame_rgb):
                self.detector_runs += 1
                if due:
                    self._last_detect = self._calls
                    self._sweep_next += len(tiles)
        elif due or not carried or searching:
            detections = (self.detector if due else self.detector.detect_single)(frame_rgb)
            self.detector_runs += 1
            if due:
                self._last_detect = self._calls
            new = self._new_rois(detections, carried)
        # New people by size, largest first: with more than there is room for, the nearest
        # are the ones the landmark network looks at and the ones followed.
        new.sort(key=lambda r: -r.size)
        rois = carried + new
        # Beyond twice the room the landmark network does not look (found, not followed).
        unseen = max(0, len(rois) - 2 * self.max_persons)
        results = self.landmarker(frame_rgb, rois[: 2 * self.max_persons])
        self.newcomer_crops += max(0, len(results) - len(carried))
        from_carried = [r for r in results[: len(carried)] if r.presence >= self.min_presence]
        from_new = [r for r in results[len(carried) :] if r.presence >= self.min_presence]

        # Keep followed people first; drop a result that duplicates a kept one
        # (two ROIs converged on one person, or a new ROI spanning people
        # already followed).
        kept: list[PoseLandmarks] = []
        boxes: list[np.ndarray] = []
        for group, contain_limit in ((from_carried, 1.0), (from_new, NEW_PERSON_CONTAINMENT)):
            for r in sorted(group, key=lambda r: -r.presence):
                b = r.box()
                if boxes:
                    others = np.stack(boxes)
                    if iou_matrix(b[None], others).max() > 0.5 or containment_matrix(b, others).max() > contain_limit:
                        continue
                kept.append(r)
                boxes.append(b)
        if unseen or len(kept) > self.max_persons:
            # Followed people first (a newcomer does not push someone out); the remaining room
            # goes to the largest new people.
            followed = sum(1 for r in kept if any(r is c for c in from_carried))
            order = list(range(followed)) + sorted(range(followed, len(kept)), key=lambda i: -_area(boxes[i]))
            order = order[: self.max_persons]
            self.persons_left_out += unseen + max(0, len(kept) - self.max_persons)
            self.frames_over_cap += 1
            kept, boxes = [kept[i] for i in order], [boxes[i] for i in order]
        self.newcomer_crops_kept += sum(1 for r in kept if any(r is n for n in from_new))

        # Frames skipped since the last call (live drops, a stream's reconnect gap): the
        # tracker predicts people that far ahead so they keep their ids.
        steps = frame_index - self._last_index if self._last_index is not None else 1
        self._last_index = frame_index
        # Colours of each person's torso and thighs, for the tracker to tell people apart
        # when one comes back after being lost: computed only where the tracker looks.
        candidates = [_Candidate(b, r.presence, r, frame_rgb) for r, b in zip(kept, boxes)]
        tracks = self.tracker.update(candidates, steps=max(1, steps))
        for c in candidates:
            c.frame = None  # tracks keep their last candidate: not the whole frame
        self._rois = [r.next_roi() for r in kept]
        self._rois = [r for r in self._rois if r.size >= self.min_roi_size]

        persons = []
        for t in tracks:
            lm: PoseLandmarks = t.detection.landmarks
            persons.append(
                TrackedPerson(
                    track_id=t.id,
                    score=float(lm.presence),
                    box=np.asarray(t.detection.box, dtype=np.float32),
                    keypoints33=lm.keypoints33,
                    coco17=lm.coco17,
                    world33=lm.world.astype(np.float32),
                    roi=lm.roi,
                )
            )
        return persons
