"""Motion-capture readers, retargeting to SMPL-24, resampling, mirroring, dataset command.

Samples in tests/data/mocap/ are a few frames of real HDM05 and CMU files (credits there)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engines.mocap import dataset
from engines.mocap import retarget as rt
from engines.mocap.asf_amc import read_asf, read_asf_amc
from engines.mocap.bvh import read_bvh
from engines.mocap.motion import SourceMotion

DATA = Path(__file__).parent / "data" / "mocap"
ASF = DATA / "HDM_bd.asf"
AMC = DATA / "HDM_bd_jogLeftCircle4StepsRstart_001_120_first12.amc"
DAZ = DATA / "cmu_daz_salsa01_first8.bvh"
ICLONE = DATA / "cmu_iclone_007_03_first6.bvh"


def _angle_deg(u, v):
    u = u / np.linalg.norm(u, axis=-1, keepdims=True)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip(np.sum(u * v, -1), -1, 1)))


# ----------------------------------------------------------------------------- ASF/AMC

def test_asf_units_and_dofs_are_read_from_the_file():
    skel = read_asf(ASF)
    assert skel.length_unit == pytest.approx(0.45)
    assert skel.metres_per_unit == pytest.approx(0.0254 / 0.45)
    assert skel.angle_unit == "deg"
    assert skel.root_order == ["TX", "TY", "TZ", "RX", "RY", "RZ"]
    assert skel.bones["lfemur"].dofs == ["rx", "ry", "rz"]
    assert skel.bones["lfoot"].dofs == ["rx", "rz"]
    assert skel.bones["lfemur"].axis_order == "XYZ"
    assert len(skel.bones) == 30


def test_amc_fk_keeps_bone_lengths_and_zero_pose_is_a_tpose():
    m = read_asf_amc(ASF, AMC)
    assert m.num_frames == 12 and m.fps == 120.0  # from the "_120.amc" suffix
    skel = read_asf(ASF)
    # every bone keeps its ASF length (in metres) in every frame
    lengths = m.bone_lengths()
    for name, bone in skel.bones.items():
        np.testing.assert_allclose(lengths[:, m.index(name)],
                                   bone.length * skel.metres_per_unit, atol=1e-9)
    # a person: 1.4 to 2 m from toes to head top, standing on y ~ 0
    assert 1.4 < m.rest_positions[:, 1].max() - m.rest_positions[:, 1].min() < 2.0
    assert abs(m.positions[..., 1].min()) < 0.1
    # zero pose: arms straight out sideways (left = +X), legs down, toes forward (+Z)
    up = m.rest_positions
    arm = up[m.index("lradius")] - up[m.index("lclavicle")]
    assert _angle_deg(arm, np.array([1.0, 0, 0])) < 2
    shin = up[m.index("ltibia")] - up[m.index("lfemur")]
    assert _angle_deg(shin, np.array([0.342, -0.94, 0])) < 1  # the ASF direction, 20 deg out
    toe = up[m.index("ltoes")] - up[m.index("lfoot")]
    assert _angle_deg(toe, np.array([0, 0, 1.0])) < 2


def test_amc_bone_rotation_uses_the_bone_axis_frame(tmp_path):
    # lfemur's axis is rotated 20 deg about z; its "rx" must bend about that local x axis, so
    # the thigh swings forward in the plane spanned by the bone and world z.
    skel = read_asf(ASF)
    lines = [":FULLY-SPECIFIED", ":DEGREES", "1", "root 0 0 0 0 0 0", "lfemur -90 0 0"]
    amc = tmp_path / "one_120.amc"
    amc.write_text("\n".join(lines) + "\n")
    m = read_asf_amc(ASF, amc)
    d_rest = m.rest_positions[m.index("lfemur")] - m.rest_positions[m.index("lhipjoint")]
    d = m.positions[0, m.index("lfemur")] - m.positions[0, m.index("lhipjoint")]
    C = Rotation.from_euler("z", 20, degrees=True).as_matrix()
    expect = C @ Rotation.from_euler("x", -90, degrees=True).as_matrix() @ C.T @ d_rest
    np.testing.assert_allclose(d, expect, atol=1e-9)
    assert d[2] > 0.3 * skel.bones["lfemur"].length * skel.metres_per_unit  # forward


# ----------------------------------------------------------------------------- BVH

def test_bvh_daz_sample_fps_override_and_tpose_frame():
    m = read_bvh(DAZ)
    assert m.num_frames == 8 and m.fps == 120.0  # what the header says
    m60 = read_bvh(DAZ, fps=60)  # salsa: really 60 fps
    assert m60.fps == 60.0
    np.testing.assert_allclose(m.bone_lengths(), m.bone_lengths()[:1].repeat(8, 0), atol=1e-9)
    # frame 0 is a T-pose facing +Z: upper arm along +X, thigh down
    p = m.positions[0]
    assert _angle_deg(p[m.index("lForeArm")] - p[m.index("lShldr")], np.array([1.0, 0, 0])) < 5
    assert _angle_deg(p[m.index("lShin")] - p[m.index("lThigh")], np.array([0, -1.0, 0])) < 5
    assert 1.5 < p[:, 1].max() - p[:, 1].min() < 2.0  # centimetres read as metres


def test_bvh_channel_order_is_respected(tmp_path):
    txt = """HIERARCHY
ROOT a
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT b
  {
    OFFSET 0 10 0
    CHANNELS 3 Yrotation Xrotation Zrotation
    End Site
    {
      OFFSET 0 0 10
    }
  }
}
MOTION
Frames: 1
Frame Time: 0.04
1 2 3 30 40 50 10 20 30
"""
    f = tmp_path / "t.bvh"
    f.write_text(txt)
    m = read_bvh(f, unit_m=1.0)
    assert m.fps == 25.0 and m.names == ["a", "b", "b_end"]
    Ra = Rotation.from_euler("ZXY", [30, 40, 50], degrees=True).as_matrix()
    Rb = Rotation.from_euler("YXZ", [10, 20, 30], degrees=True).as_matrix()
    np.testing.assert_allclose(m.positions[0, 1], [1, 2, 3] + Ra @ [0, 10, 0], atol=1e-9)
    np.testing.assert_allclose(m.positions[0, 2], m.positions[0, 1] + Ra @ Rb @ [0, 0, 10],
                               atol=1e-9)
    np.testing.assert_allclose(m.rotations[0, 1], Ra @ Rb, atol=1e-12)


def test_bvh_bad_files_give_clear_errors(tmp_path):
    f = tmp_path / "bad.bvh"
    f.write_text("HIERARCHY\nROOT a\n{\n OFFSET 0 0 0\n CHANNELS 1 Wrotation\n}\nMOTION\n")
    with pytest.raises(ValueError, match="unknown channels"):
        read_bvh(f)
    f.write_text(DAZ.read_text().replace("Frames:\t8", "Frames:\t80").replace("Frames: 8", "Frames: 80"))
    with pytest.raises(ValueError, match="expected 80 frames"):
        read_bvh(f)


def test_iclone_sample_drops_the_added_tpose_and_matches_the_stored_calibration():
    raw = read_bvh(ICLONE)
    assert raw.fps == 60.0  # "Frame Time: 0.016667" snapped
    m = dataset.read_clip(ICLONE, "bvh-iclone")
    assert m.num_frames == raw.num_frames - 1
    cal = rt.tpose_calibration(raw, 0)
    stored = rt.BVH_ICLONE_MAP.calibration
    for n in ("CC_Base_Pelvis", "CC_Base_L_Upperarm", "CC_Base_R_Calf", "CC_Base_Head"):
        np.testing.assert_allclose(stored["rotations"][n], cal["rotations"][n], atol=1e-5)
        np.testing.assert_allclose(stored["positions"][n], cal["positions"][n], atol=1e-5)


# ----------------------------------------------------------------------------- retargeting

def _smpl_as_source(poses, trans, target, length_scale):
    """A source skeleton made from SMPL itself by FK, with other bone lengths (same rest
    directions), so retargeting should give back the same rotations."""
    par = target.parents
    J = target.rest_joints
    Js = J.copy()
    for j in range(1, 24):
        Js[j] = Js[par[j]] + length_scale[j] * (J[j] - J[par[j]])
    src = rt.TargetSkeleton(par, Js, "source")
    X, G = rt.smpl_fk(poses, src, trans)
    names = [f"src_{n}" for n in rt.SMPL_JOINT_NAMES]
    motion = SourceMotion(names, par.copy(), X, G, 60.0, Js - Js[0], np.tile(np.eye(3), (24, 1, 1)),
                          "synthetic")
    smap = rt.SkeletonMap("synthetic", points={k: names[k] for k in range(24)},
                          twist={k: names[k] for k in range(24)})
    return motion, smap


def test_retargeting_recovers_a_known_pose():
    rng = np.random.default_rng(0)
    target = rt.fallback_target()
    T = 20
    poses = rng.normal(0, 0.35, (T, 72))
    poses[:, :3] = Rotation.random(T, random_state=1).as_rotvec()  # any root orientation
    trans = rng.normal(0, 1, (T, 3))
    motion, smap = _smpl_as_source(poses, trans, target, rng.uniform(0.8, 1.25, 24))
    res = rt.retarget(motion, smap, target)
    R_true = Rotation.from_rotvec(poses.reshape(-1, 3))
    R_got = Rotation.from_rotvec(res.poses.reshape(-1, 3))
    err = np.degrees((R_true.inv() * R_got).magnitude())
    assert err.max() < 0.01, f"worst joint rotation error {err.max():.3f} deg"
    assert rt.bone_direction_errors(res, target).max() < 0.01


def test_retargeting_aligns_bones_when_rest_poses_differ():
    # the source's rest pose differs (arms 30 deg lower): its local angles differ, but
    # every articulated bone direction must still match after retargeting
    rng = np.random.default_rng(3)
    target = rt.fallback_target()
    poses = rng.normal(0, 0.3, (10, 72))
    motion, smap = _smpl_as_source(poses, np.zeros((10, 3)), target, np.ones(24))
    down = Rotation.from_euler("z", [[-30], [30]], degrees=True).as_matrix()
    # rebuild the source with a different rest pose: rotate the arm chains' rest directions
    par = target.parents
    J = target.rest_joints.copy()
    for side, R in ((16, down[0]), (17, down[1])):
        chain = [side]
        for k in range(24):
            if par[k] in chain:
                chain.append(k)
        for k in chain[1:]:
            J[k] = J[side] + R @ (target.rest_joints[k] - target.rest_joints[side])
    src = rt.TargetSkeleton(par, J, "src")
    X, G = rt.smpl_fk(poses, src)
    motion = SourceMotion(motion.names, par.copy(), X, G, 60.0, J - J[0],
                          np.tile(np.eye(3), (24, 1, 1)), "synthetic-rest")
    res = rt.retarget(motion, smap, target)
    err = rt.bone_direction_errors(res, target)
    articulated = [k - 1 for k in range(1, 24) if par[k] not in (0, 9)]
    assert err[:, articulated].max() < 0.01
    np.testing.assert_allclose(res.trans, 0, atol=1e-9)  # same legs: pelvis stays put
    # and the arm rotations differ from the source's local angles (they were not copied)
    assert np.abs(res.poses[:, 16 * 3:17 * 3] - poses[:, 16 * 3:17 * 3]).max() > 0.1


def test_real_clips_retarget_with_small_articulated_bone_errors():
    target = rt.fallback_target()
    par = target.parents
    articulated = [k - 1 for k in range(1, 24) if par[k] not in (0, 9)]
    for path, kind in ((AMC, "asf-cmu"), (DAZ, "bvh-daz"), (ICLONE, "bvh-iclone")):
        m = dataset.read_clip(path, kind, asf=ASF if kind == "asf-cmu" else None)
        res = rt.retarget(m, rt.SKELETON_MAPS[kind], target)
        assert res.poses.shape == (m.num_frames, 72) and np.isfinite(res.poses).all()
        err = rt.bone_direction_errors(res, target)
        assert err[:, articulated].max() < 0.5, kind
        # feet where the (scaled) source has them: translation follows the hips
        X, _ = rt.smpl_fk(res.poses, target, res.trans)
        feet = X[:, [7, 8, 10, 11], 1].min(1)
        assert np.all(np.abs(feet - res.scale * res.source_points[:, [7, 8, 10, 11], 1].min(1))
                      < 0.05), kind


# ----------------------------------------------------------------------------- mirror, resample

def test_mirroring_twice_is_identity_and_reflects_the_body():
    rng = np.random.default_rng(1)
    poses = rng.normal(0, 0.5, (7, 72))
    trans = rng.normal(0, 1, (7, 3))
    p2, t2 = rt.mirror_poses(*rt.mirror_poses(poses, trans))
    np.testing.assert_allclose(p2, poses)
    np.testing.assert_allclose(t2, trans)
    # on the (symmetric) fallback skeleton the mirrored motion is the reflected motion
    target = rt.fallback_target()
    X, _ = rt.smpl_fk(poses, target, trans)
    pm, tm = rt.mirror_poses(poses, trans)
    Xm, _ = rt.smpl_fk(pm, target, tm)
    reflected = X[:, rt.SMPL_MIRROR] * np.array([-1.0, 1, 1])
    np.testing.assert_allclose(Xm, reflected, atol=1e-9)


def test_resampling_keeps_endpoints_and_samples():
    rng = np.random.default_rng(2)
    poses = rng.normal(0, 0.4, (121, 72))  # 1 s at 120 fps
    trans = rng.normal(0, 1, (121, 3))
    p, t = rt.resample(poses, trans, 120.0, 30.0)
    assert p.shape == (31, 72) and t.shape == (31, 3)
    R = lambda x: Rotation.from_rotvec(x.reshape(-1, 3))  # noqa: E731
    for out, src in ((0, 0), (30, 120), (7, 28)):  # 30 fps frames fall on every 4th input
        assert np.degrees((R(p[out]).inv() * R(poses[src])).magnitude()).max() < 1e-6
        np.testing.assert_allclose(t[out], trans[src], atol=1e-12)
    # halfway between two frames: the slerp midpoint and the translation mean
    p2, t2 = rt.resample(poses[:2], trans[:2], 1.0, 2.0)
    assert p2.shape[0] == 3
    np.testing.assert_allclose(t2[1], trans[:2].mean(0))
    mid = Rotation.from_rotvec(poses[0, :3]) * Rotation.from_rotvec(
        0.5 * (Rotation.from_rotvec(poses[0, :3]).inv() * Rotation.from_rotvec(poses[1, :3])).as_rotvec())
    assert np.degrees((mid.inv() * Rotation.from_rotvec(p2[1, :3])).magnitude()) < 1e-6


# ----------------------------------------------------------------------------- dataset command

def test_dataset_command_writes_arrays_with_actor_ids(tmp_path, capsys):
    root = tmp_path / "raw"
    (root / "train" / "5").mkdir(parents=True)
    shutil.copy(ASF, root / "train" / "5" / "HDM_bd.asf")
    shutil.copy(AMC, root / "train" / "5" / "HDM_bd_jog_001_120.amc")
    (root / "bvh" / "salsa").mkdir(parents=True)
    shutil.copy(DAZ, root / "bvh" / "salsa" / "01.bvh")
    (root / "All_BVH" / "subjects" / "007").mkdir(parents=True)
    shutil.copy(ICLONE, root / "All_BVH" / "subjects" / "007" / "007_03.bvh")
    out = tmp_path / "d.npz"
    assert dataset.main([str(root), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    z = np.load(out)
    n = len(z["poses"])
    assert z["poses"].shape == (n, 72) and z["trans"].shape == (n, 3) and z["fps"] == 30
    assert sorted(z["actors"].tolist()) == ["cmu-daz:salsa-a", "cmu-iclone:007", "hdm05:bd"]
    assert len(z["clip_names"]) == 6 and z["clip_mirrored"].sum() == 3  # each clip + mirror
    # 12 frames at 120 fps -> 3 at 30 fps; the T-pose + glitch frames of the Daz clip go
    assert z["clip_length"][z["clip_names"].tolist().index("HDM_bd_jog_001_120")] == 3
    held = z["clip_heldout"][z["clip_id"]]
    assert held.sum() == (z["actor_id"] == z["actors"].tolist().index("cmu-iclone:007")).sum()
    np.testing.assert_array_equal(z["clip_start"][1:], np.cumsum(z["clip_length"])[:-1])
    assert dataset.main([str(tmp_path / "missing"), "--out", str(out)]) == 2


def test_hinge_twist_correction_undoes_a_twisted_source_tpose():
    # The source's upper arms carry 30 deg of extra twist relative to its T-pose (as the CMU ASF
    # skeleton's elbow axis does); positions are the true pose. Copying the twist would make the
    # elbows bend in a tilted plane; the hinge correction gives back the true rotations.
    rng = np.random.default_rng(4)
    target = rt.fallback_target()
    T = 60
    poses = np.zeros((T, 24, 3))
    poses[:, 16] = rng.normal(0, 0.4, (T, 3))
    poses[:, 17] = rng.normal(0, 0.4, (T, 3))
    flex = np.radians(rng.uniform(40, 110, (T, 2)))
    poses[:, 18, 1] = -flex[:, 0]  # left elbow about -Y
    poses[:, 19, 1] = flex[:, 1]
    poses[:, 4, 0] = flex[:, 0]  # knees about +X
    poses = poses.reshape(T, 72)
    motion, smap = _smpl_as_source(poses, np.zeros((T, 3)), target, np.ones(24))
    for j, sign in ((16, 1), (17, -1)):  # +30 deg about each upper arm's own direction
        twist = Rotation.from_rotvec(sign * np.radians(30) * np.array([1.0, 0, 0])).as_matrix()
        motion.rotations[:, j] = motion.rotations[:, j] @ twist
    R_true = Rotation.from_rotvec(poses.reshape(-1, 3))

    def worst(res):
        R_got = Rotation.from_rotvec(res.poses.reshape(-1, 3))
        return np.degrees((R_true.inv() * R_got).magnitude()).max()

    assert worst(rt.retarget(motion, smap, target, hinge_twist=False)) > 20
    res = rt.retarget(motion, smap, target)
    assert worst(res) < 0.5
    # +30 deg about each arm's own bone direction (left +X, right -X) was added: found back
    assert np.degrees(res.hinge_twist[16]) == pytest.approx(30, abs=0.5)
    assert np.degrees(res.hinge_twist[17]) == pytest.approx(30, abs=0.5)
    assert abs(res.hinge_twist.get(1, 0.0)) < np.radians(0.5)  # the knee needed none
