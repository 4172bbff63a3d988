"""Landmark crops split over two network sessions on two threads (live mode), and run one
call per crop (ONNX Runtime on CPU), give what one batched call gives, in the same order."""

from __future__ import annotations

import numpy as np


def test_two_sessions_give_the_batched_landmarks():
    from engines.perception.person_keypoints import PersonKeypoints
    from engines.perception.pose_landmarks import PoseLandmarker
    from streamer.synthetic_source import SyntheticPeopleSource, compose

    image, _, _ = compose(3)
    pk = PersonKeypoints(max_persons=3, detector_tile_size=SyntheticPeopleSource(3).detector_tile_size)
    for i in range(3):
        pk.process(image, i)
    rois = list(pk._rois)
    assert len(rois) == 3
    one = PoseLandmarker(batch_crops=True)(image, rois)
    per_crop = PoseLandmarker()
    assert not per_crop.batch_crops  # the default on ONNX Runtime's CPU provider
    for a, b in zip(one, per_crop(image, rois)):
        np.testing.assert_allclose(a.image, b.image, atol=1e-4)
        np.testing.assert_allclose(a.world, b.world, atol=1e-6)
    two = PoseLandmarker(sessions=2)
    split = two(image, rois)
    assert [r.roi for r in split] == rois
    for a, b in zip(one, split):
        np.testing.assert_allclose(a.image, b.image, atol=1e-3)
        np.testing.assert_allclose(a.world, b.world, atol=1e-5)
        assert abs(a.presence - b.presence) < 1e-5
    assert two(image, rois[:1])[0].roi == rois[0]  # one crop: one session
