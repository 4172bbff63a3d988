"""Tracker: ids stay with people through crossings, gaps and weak detections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from engines.perception.tracking import Tracker, TrackState, iou_matrix


@dataclass
class Det:
    box: np.ndarray
    score: float = 0.9


def box(cx, cy, w=60, h=160):
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], float)


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    b = np.array([[5, 0, 15, 10]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150], [0.0]])


def test_two_people_walking_past_each_other_keep_ids():
    # Two people walk towards each other along x, at slightly different depths
    # (heights), overlapping in the middle of the sequence.
    tr = Tracker()
    first = {}
    for f in range(60):
        a = Det(box(100 + 8 * f, 300, 60, 170))
        b = Det(box(580 - 8 * f, 310, 50, 150))
        tracks = tr.update([b, a] if f % 2 else [a, b])
        by_det = {id(t.detection): t.id for t in tracks}
        if f == 0:
            first = {"a": by_det[id(a)], "b": by_det[id(b)]}
            assert first["a"] != first["b"]
        else:
            assert by_det.get(id(a)) == first["a"], f"frame {f}"
            assert by_det.get(id(b)) == first["b"], f"frame {f}"


def test_lost_person_comes_back_with_same_id():
    tr = Tracker(max_lost=10)
    for f in range(10):
        (t,) = tr.update([Det(box(100 + 5 * f, 300))])
    pid = t.id
    for f in range(10, 15):  # hidden for 5 frames, keeps walking
        assert tr.update([]) == []
        assert tr.tracks[0].state == TrackState.LOST
    (t,) = tr.update([Det(box(100 + 5 * 15, 300))])
    assert t.id == pid


def test_lost_too_long_gets_new_id():
    tr = Tracker(max_lost=3)
    (t,) = tr.update([Det(box(100, 300))])
    for _ in range(5):
        tr.update([])
    assert tr.tracks == []
    tr.update([Det(box(100, 300))])
    (t2,) = tr.update([Det(box(100, 300))])
    assert t2.id != t.id


def test_low_score_detection_extends_track_but_never_starts_one():
    tr = Tracker(high_score=0.5, low_score=0.1)
    (t,) = tr.update([Det(box(100, 300), 0.9)])
    (t2,) = tr.update([Det(box(104, 300), 0.2)])  # weak: second pass keeps the track
    assert t2.id == t.id and t2.score == pytest.approx(0.2)
    # A weak detection far away from any track is not a new person.
    out = tr.update([Det(box(108, 300), 0.9), Det(box(600, 300), 0.3)])
    assert [x.id for x in out] == [t.id]
    assert len(tr.tracks) == 1


def test_new_track_needs_min_hits_after_first_frame():
    tr = Tracker(min_hits=2)
    tr.update([Det(box(100, 300))])
    assert [t.id for t in tr.update([Det(box(102, 300)), Det(box(500, 300))])] == [1]
    assert [t.id for t in tr.update([Det(box(104, 300)), Det(box(502, 300))])] == [1, 2]
    # A one-frame false detection never surfaces and leaves no track behind.
    tr.update([Det(box(106, 300)), Det(box(504, 300)), Det(box(900, 100))])
    tr.update([Det(box(108, 300)), Det(box(506, 300))])
    assert len(tr.tracks) == 2


def test_kalman_prediction_bridges_fast_motion():
    # Moves 40 px/frame with a 60 px wide box: without velocity, IoU after a
    # 2-frame gap would be zero.
    tr = Tracker(match_iou=0.2)
    for f in range(8):
        (t,) = tr.update([Det(box(100 + 40 * f, 300))])
    tr.update([])
    tr.update([])
    (t2,) = tr.update([Det(box(100 + 40 * 10, 300))])
    assert t2.id == t.id


def test_bad_box_is_a_clear_error():
    with pytest.raises(ValueError, match="x2>x1"):
        Tracker().update([Det(np.array([10, 10, 5, 20.0]))])


@dataclass
class Seen:
    """A detection with an appearance (engines.perception.appearance descriptors)."""

    box: np.ndarray
    appearance: np.ndarray
    score: float = 0.9


RED = np.array([[0.5, 0.6, 0.4], [0.3, 0.0, 0.0]], np.float32)  # torso, thighs (Lab / 100)
BLUE = np.array([[0.4, 0.1, -0.5], [0.7, -0.2, 0.3]], np.float32)


def test_crossing_people_never_swap_ids_even_when_one_is_hidden_at_the_crossing():
    for hidden in (0, 8):  # frames the nearer person hides the other around the crossing
        tr = Tracker(dormant_frames=120)
        ids = {}
        for f in range(80):
            a, b = 100 + 6 * f, 580 - 6 * f  # they cross at frame 40
            dets = [Seen(box(a, 300), RED)]
            if not (40 - hidden // 2 <= f < 40 + hidden - hidden // 2):
                dets.append(Seen(box(b, 310), BLUE))
            for t in tr.update(dets):
                who = "red" if t.detection.appearance is RED else "blue"
                ids.setdefault(who, set()).add(t.id)
        assert ids == {"red": {1}, "blue": {2}}, hidden


def test_a_person_hidden_for_two_seconds_comes_back_with_their_id():
    tr = Tracker(dormant_frames=120)
    for f in range(20):
        tr.update([Seen(box(200 + 3 * f, 300), RED), Seen(box(600, 300), BLUE)])
    for f in range(60):  # 2 s at 30 fps behind something; the other person stays in view
        tr.update([Seen(box(600, 300), BLUE)])
    back = tr.update([Seen(box(300, 300), RED), Seen(box(600, 300), BLUE)])
    back = tr.update([Seen(box(302, 300), RED), Seen(box(600, 300), BLUE)])
    assert sorted(t.id for t in back) == [1, 2]
    assert [t.id for t in back if t.detection.appearance is RED] == [1]


def test_a_dormant_id_is_not_given_to_someone_far_away_or_dressed_differently():
    tr = Tracker(dormant_frames=120)
    for f in range(20):
        tr.update([Seen(box(200, 300), RED)])
    for f in range(40):
        tr.update([])
    far = [tr.update([Seen(box(1400, 300), RED)]) for _ in range(2)][-1]  # 7 heights away
    assert [t.id for t in far] == [2]
    tr = Tracker(dormant_frames=120)
    for f in range(20):
        tr.update([Seen(box(200, 300), RED)])
    for f in range(40):
        tr.update([])
    other = [tr.update([Seen(box(220, 300), BLUE)]) for _ in range(2)][-1]  # where red was, in blue
    assert [t.id for t in other] == [2]


def test_dormant_tracks_are_forgotten_after_their_time():
    tr = Tracker(max_lost=10, dormant_frames=20)
    tr.update([Seen(box(200, 300), RED)])
    for _ in range(31):
        tr.update([])
    assert tr.tracks == []
