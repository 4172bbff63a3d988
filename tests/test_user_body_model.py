"""``--body-model``: a user's SMPL / SMPL+H / SMPL-X file or smplx models folder for the outputs.

Finding the file (smplx's folder layout, gender), one-line errors naming the file and what
was expected, carrying the fit's bodies over (engines.body.transfer), and a run that
publishes and records on the user's model (synthetic people, no networks: fast).
"""
import threading

import numpy as np
import pytest
import torch

from engines.body import BodyModel, load_body_model
from engines.body.model_file import BodyModelFileError
from engines.body.model_folder import find_body_model_file, load_user_body_model
from engines.body.transfer import BodyTransfer
from smpl_family import SMPL, SMPLH, SMPLX, synthetic_model, write_official_npz, write_official_pkl
from streamer.app import RunConfig, run
from streamer.cli import main
from streamer.errors import ConfigError
from streamer.motion_load import MotionFileError, load_motion
from streamer.subscriber import Subscriber
from synthetic import SyntheticPersons


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An smplx models folder: smpl/SMPL_NEUTRAL.pkl (chumpy), smplh/SMPLH_FEMALE.pkl,
    smplx/SMPLX_FEMALE.npz (synthetic, official layouts)."""
    root = tmp_path_factory.mktemp("models")
    for family, name, writer in ((SMPL, "SMPL_NEUTRAL.pkl", write_official_pkl),
                                 (SMPLH, "SMPLH_FEMALE.pkl", write_official_pkl),
                                 (SMPLX, "SMPLX_FEMALE.npz", write_official_npz)):
        (root / family.name).mkdir()
        writer(root / family.name / name, synthetic_model(family, num_expression=10 if family is SMPLX else 0))
    return root


# -- finding the file -------------------------------------------------------------------------


def test_folder_layouts_and_genders(models):
    assert find_body_model_file(models / "smplx", "female") == models / "smplx" / "SMPLX_FEMALE.npz"
    assert find_body_model_file(models, "neutral") == models / "smpl" / "SMPL_NEUTRAL.pkl"  # the only neutral one
    assert find_body_model_file(models / "smpl") == models / "smpl" / "SMPL_NEUTRAL.pkl"  # default neutral
    data = load_user_body_model(models / "smplh", "female")
    assert (data.family, data.gender, data.num_joints, data.name) == ("smplh", "female", 52, "smplh")


def one_line_error(call, *needles):
    """``call`` raises a one-line error holding every needle."""
    with pytest.raises((BodyModelFileError, ConfigError, MotionFileError)) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_clear_one_line_errors(models, tmp_path):
    # Missing model: no such path; a folder without model files.
    one_line_error(lambda: find_body_model_file(tmp_path / "nope"), str(tmp_path / "nope"), "expected a .pkl or .npz")
    (tmp_path / "empty").mkdir()
    one_line_error(lambda: find_body_model_file(tmp_path / "empty"), "empty", "smplx/SMPLX_NEUTRAL.npz")
    # Wrong gender: the folder has no such file; the file is another gender's.
    one_line_error(lambda: find_body_model_file(models / "smplx", "male"), "no male model file",
                   "SMPLX_FEMALE.npz", "--gender")
    one_line_error(lambda: load_user_body_model(models / "smplx" / "SMPLX_FEMALE.npz", "male"),
                   "SMPLX_FEMALE.npz", "the female model", "male one was asked for")
    # Several families of the asked gender: name one.
    one_line_error(lambda: find_body_model_file(models, "female"), "several families", "SMPL+H", "SMPL-X")
    # A different joint count: not a family member; a file named SMPL-X holding SMPL.
    bad = synthetic_model(SMPL)
    bad["kintree_table"] = bad["kintree_table"][:, :20]
    np.savez(tmp_path / "odd.npz", **bad)
    one_line_error(lambda: load_user_body_model(tmp_path / "odd.npz"), "odd.npz", "20 joints",
                   "SMPL's 24, SMPL+H's 52 or SMPL-X's 55")
    (tmp_path / "smplx").mkdir()
    write_official_npz(tmp_path / "smplx" / "SMPLX_NEUTRAL.npz", synthetic_model(SMPL))
    one_line_error(lambda: load_user_body_model(tmp_path / "smplx"), "SMPLX_NEUTRAL.npz",
                   "expected a SMPL-X model (55 joints", "got 24 joints")
    # An unreadable pickle.
    (tmp_path / "SMPL_MALE.pkl").write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00a")
    one_line_error(lambda: load_user_body_model(tmp_path / "SMPL_MALE.pkl"), "SMPL_MALE.pkl",
                   "corrupt or unreadable pickle")


def test_cli_errors_before_anything_loads(models, tmp_path, capsys, clip):
    base = ["-q", "run", "--source", str(clip), "--publish", "none", "--max-frames", "1"]
    assert main([*base, "--body-model", str(models / "smplx"), "--gender", "male"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("smplstream: error: --body-model: ") and "no male model file" in err and "\n" not in err
    assert main([*base, "--gender", "female"]) == 2
    assert "--gender needs --body-model" in capsys.readouterr().err
    assert main([*base, "--body-model", str(models / "smplx"), "--gender", "female", "--record",
                 str(tmp_path / "r"), "--formats", "npz,bvh"]) == 2
    assert "BVH, .smpl and GLB files hold SMPL's 24-joint skeleton" in capsys.readouterr().err


def test_load_motion_errors(tmp_path):
    one_line_error(lambda: load_motion(tmp_path / "none.npz"), "none.npz", "no such motion file")
    np.savez(tmp_path / "kp.npz", keypoints=np.zeros((2, 33, 3)))
    one_line_error(lambda: load_motion(tmp_path / "kp.npz"), "kp.npz", "not an SMPL motion file", "poses")
    np.savez(tmp_path / "odd.npz", poses=np.zeros((2, 30)), trans=np.zeros((2, 3)), joints=np.zeros((2, 10, 3)))
    one_line_error(lambda: load_motion(tmp_path / "odd.npz"), "odd.npz", "(T, 165) SMPL-X")


# -- carrying bodies over ------------------------------------------------------------------------


def test_transfer_to_the_same_model_is_the_identity():
    body = BodyModel(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    poses, betas = 0.4 * torch.randn(5, 72, generator=g, dtype=torch.float64), torch.randn(5, 10, generator=g, dtype=torch.float64)
    trans = torch.randn(5, 3, generator=g, dtype=torch.float64)
    exact = BodyTransfer(body, body, ridge=0.0)(poses, betas, trans)
    np.testing.assert_allclose(exact.betas.numpy(), betas.numpy(), atol=1e-8)
    np.testing.assert_allclose(exact.joints.numpy(), body(poses, betas, trans).joints.numpy(), atol=1e-9)
    # The default ridge keeps weakly seen shape directions small: joints stay within millimetres.
    ridged = BodyTransfer(body, body)(poses, betas, trans)
    assert (ridged.joints - body(poses, betas, trans).joints).norm(dim=-1).max() < 5e-3


def test_transfer_to_smplx_keeps_the_body_pose_and_the_pelvis(models):
    fit = BodyModel(dtype=torch.float64)
    target = BodyModel(load_body_model(models / "smplx" / "SMPLX_FEMALE.npz"), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    poses, betas = 0.4 * torch.randn(3, 72, generator=g, dtype=torch.float64), torch.randn(3, 10, generator=g, dtype=torch.float64)
    trans = torch.randn(3, 3, generator=g, dtype=torch.float64)
    out = BodyTransfer(fit, target)(poses, betas, trans)
    full = out.poses.view(3, 55, 3)
    assert torch.equal(full[:, :22], poses.view(3, 24, 3)[:, :22])  # the body's 22 joints
    assert not full[:, 22:].any()  # jaw, eyes, fingers at rest
    np.testing.assert_allclose(out.joints[:, 0].numpy(), fit(poses, betas, trans).joints[:, 0].numpy(), atol=1e-12)
    np.testing.assert_allclose(out.joints.numpy(), target(full, out.betas, out.transl).joints.numpy(), atol=1e-12)


# -- a run on the user's model ----------------------------------------------------------------------


def test_run_publishes_and_records_on_the_users_smplx_model(models, clip, endpoint, tmp_path):
    smplx = pytest.importorskip("smplx")
    got = []

    def receive():
        with Subscriber(endpoint) as sub:
            msg = sub.receive(timeout=20)
            got.append(msg)

    listener = threading.Thread(target=receive)
    listener.start()
    record = tmp_path / "rec"
    run(RunConfig(source=str(clip), publish=endpoint, wait_subscribers=1, record=str(record), max_frames=6,
                  perception=False, progress=False, body_model=str(models / "smplx"), gender="female"),
        extra_stages=[SyntheticPersons(persons=2)])
    listener.join(20)
    msg = got[0]
    assert (msg.frame.header["body_model"], msg.frame.header["gender"]) == ("smplx", "female")
    person = msg.frame.persons[0].arrays
    assert person["poses"].shape == (165,) and person["joints"].shape == (55, 3) and person["betas"].shape == (10,)
    with np.load(record / "track_0001.npz") as z:
        assert (str(z["gender"]), str(z["body_model"])) == ("female", "smplx")
        assert z["body_pose"].shape == (6, 63) and z["global_orient"].shape == (6, 3) and z["transl"].shape == (6, 3)
    motion = load_motion(record / "track_0001.npz")
    body = smplx.create(str(models), **motion.create_kwargs)
    with torch.no_grad():
        joints = body(**{k: torch.from_numpy(v) for k, v in motion.items()}).joints[:, :55].numpy()
    assert np.abs(joints - motion.joints).max() < 1e-5


def test_recover_after_a_kill_writes_the_users_gender_and_layout(models, tmp_path):
    """A recording on a user's SMPL-X model killed before it closed (os._exit after a flush):
    `recover` assembles files that say the model's gender and carry smplx's layout."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from streamer.motion_recovery import recover

    record = tmp_path / "rec"
    script = f"""
import os
from engines.body.model_folder import load_user_body_model
from streamer.frames import Frame
from streamer.output_body import BodyModelRecorder, OutputBody
from synthetic import SyntheticPersons
recorder = BodyModelRecorder({str(record)!r}, fps=30.0,
                             output_body=OutputBody(load_user_body_model({str(models / "smplx")!r}, "female")))
people = SyntheticPersons(persons=1)
for i in range(5):
    recorder.write(people.process(Frame(index=i, image=None, capture_time=float(i), source_size=(640, 480))))
recorder.flush()
os._exit(0)  # as a kill: nothing assembled, the chunks left behind
"""
    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    assert not (record / "track_0001.npz").exists()
    recover(record)
    with np.load(record / "track_0001.npz") as z:
        assert (str(z["gender"]), str(z["body_model"])) == ("female", "smplx")
        assert z["body_pose"].shape == (5, 63) and z["transl"].shape == (5, 3)
