"""Preview drawing of bodies: the batched mesh covers what per-triangle filling covered, and
the projected skeleton lands on the joints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer.frames import Person

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def scene():
    from calibration.camera import assumed_camera
    from engines.body.body_model import BodyModel

    body = BodyModel.load()
    camera = assumed_camera(640, 480)
    rng = np.random.default_rng(0)
    persons = []
    for tid, x, z in ((1, 0.0, 4.0), (2, 0.15, 5.5)):  # track 2 partly behind track 1
        pose = rng.normal(0, 0.15, 72).astype(np.float32)
        pose[:3] = [np.pi, 0, 0]  # upright, facing the camera
        trans = np.array([x, 0.0, z], np.float32)
        with torch.no_grad():
            joints = body(torch.from_numpy(pose)[None], None, torch.from_numpy(trans)[None]).joints[0].numpy()
        persons.append(Person(tid, 1.0, {"poses": pose, "betas": np.zeros(10, np.float32), "trans": trans,
                                         "joints": joints}))
    return body, camera, persons


def test_batched_mesh_covers_the_same_pixels_as_per_triangle_filling(scene):
    import cv2

    from streamer.preview import BodyMeshDrawer

    body, camera, persons = scene
    drawer = BodyMeshDrawer(camera, body)
    frame = np.zeros((480, 640, 3), np.uint8)
    drawer.draw(frame, persons)
    # Reference: every front-facing triangle filled on its own.
    reference = np.zeros((480, 640), np.uint8)
    for verts in drawer.vertices(persons):
        tri = verts[drawer.faces]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        facing = (normal * tri.mean(1)).sum(1) < 0
        for t in np.round(camera.project(verts.astype(np.float64))[drawer.faces[facing]]).astype(np.int32):
            cv2.fillConvexPoly(reference, t, 255)
    drawn = frame.any(axis=2)
    ref = reference > 0
    assert ref.sum() > 5000
    assert (drawn & ref).sum() / ref.sum() > 0.995  # no holes worth the name
    assert (drawn & ~ref).sum() / ref.sum() < 0.01
    # The nearer person (track 1) is drawn over the farther one where they overlap: its colour wins
    # at its own pelvis.
    px = np.round(camera.project(persons[0].arrays["joints"][:1].astype(np.float64))[0]).astype(int)
    b, g, r = frame[px[1], px[0]].astype(int)
    assert r > b + 20  # track 1 is orange (BGR 0, 200, 255), track 2 green (80, 220, 80)


def test_skeleton_is_drawn_on_the_projected_joints(scene):
    from streamer.preview import SkeletonDrawer

    _, camera, persons = scene
    frame = np.zeros((480, 640, 3), np.uint8)
    SkeletonDrawer(camera).draw(frame, persons)
    for p in persons:
        for x, y in np.round(camera.project(p.arrays["joints"].astype(np.float64))).astype(int):
            assert frame[y, x].any()
    assert frame.any(axis=2).mean() < 0.05  # lines and dots, not a filled shape
