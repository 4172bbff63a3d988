"""Round trip through smplx: a track recorded from the bundled clip, read back with
``load_motion`` and posed by smplx, gives the motion file's joints (camera frame, and the
documented Y-up frame); the same for ``lift --body-model`` onto an SMPL-X model in
smplx's folder layout, and for a run recording on an SMPL model with BVH beside.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.body import DEFAULT_MODEL_PATH
from smpl_family import SMPL, SMPLX, smplx_struct, synthetic_model, write_official_npz, write_official_pkl
from streamer.app import RunConfig, run
from streamer.cli import main
from streamer.motion_files import load_motion
from synthetic import SyntheticPersons

smplx = pytest.importorskip("smplx")  # dev dependency

TOL = 1e-5  # metres
CLIP = Path(__file__).parent / "data" / "sports2d_demo.mp4"


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """20 frames of the clip through the whole pipeline (keypoints, lift, fit), recorded."""
    out = tmp_path_factory.mktemp("rec")
    assert main(["-q", "run", "--source", str(CLIP), "--publish", "none", "--max-frames", "20",
                 "--record", str(out)]) == 0
    return out


def posed_by_smplx(motion, model) -> np.ndarray:
    """smplx's joints (T, J, 3) for the parameters ``load_motion`` gave."""
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in motion.items()})
    return out.joints[:, : motion.joints.shape[1]].numpy()


@pytest.mark.parametrize("frame", ["camera", "y_up"])
def test_recorded_track_posed_by_smplx_gives_its_joints(recording, frame):
    tracks = sorted(recording.glob("track_[0-9][0-9][0-9][0-9].npz"))
    assert tracks
    # The bundled model through smplx's SMPL class (which reads only pickles from disk).
    arrays = dict(np.load(DEFAULT_MODEL_PATH))
    for path in tracks:
        motion = load_motion(path, frame=frame)
        assert (motion.model_type, motion.gender, motion.body_model) == ("smpl", "neutral", "anny-smpl")
        kwargs = {k: v for k, v in motion.create_kwargs.items() if k not in ("model_type", "gender")}
        model = smplx.SMPL("unused", data_struct=smplx_struct(arrays), **kwargs)
        err = np.linalg.norm(posed_by_smplx(motion, model) - motion.joints, axis=-1).max()
        print(f"{path.name} ({len(motion.joints)} frames, {frame}): smplx vs file joints, max {err:.2e} m")
        assert err < TOL
        if frame == "y_up":  # the documented turn: 180 degrees about x
            with np.load(path) as z:
                np.testing.assert_allclose(motion.joints, z["joints"] * [1, -1, -1], atol=1e-6)


def test_lift_onto_an_smplx_model_in_smplx_layout(recording, tmp_path):
    models = tmp_path / "models"
    (models / "smplx").mkdir(parents=True)
    write_official_npz(models / "smplx" / "SMPLX_FEMALE.npz", synthetic_model(SMPLX, num_expression=10))
    keypoints = sorted(recording.glob("track_*_blazepose33.npz"))[0]
    out = tmp_path / "lifted.npz"
    assert main(["lift", str(keypoints), "--out", str(out), "--body-model", str(models), "--gender", "female"]) == 0
    with np.load(out) as z:
        assert (str(z["body_model"]), str(z["gender"])) == ("smplx", "female")
        T = len(z["poses"])
        assert z["poses"].shape == (T, 165) and z["joints"].shape == (T, 55, 3)
        assert z["global_orient"].shape == (T, 3) and z["body_pose"].shape == (T, 63) and z["transl"].shape == (T, 3)
    motion = load_motion(out)
    err = np.linalg.norm(posed_by_smplx(motion, smplx.create(str(models), **motion.create_kwargs)) - motion.joints,
                         axis=-1).max()
    print(f"lift onto SMPL-X: smplx vs file joints, max {err:.2e} m")
    assert err < TOL


def test_record_on_an_smpl_model_with_bvh(tmp_path, clip):
    """An official-layout SMPL .pkl: BVH files are written with its skeleton."""
    pkl = write_official_pkl(tmp_path / "SMPL_NEUTRAL.pkl", synthetic_model(SMPL))
    record = tmp_path / "rec"
    run(RunConfig(source=str(clip), publish=None, record=str(record), formats="npz,bvh", max_frames=4,
                  perception=False, progress=False, body_model=str(pkl)), extra_stages=[SyntheticPersons(persons=1)])
    assert (record / "track_0001.bvh").is_file()
    motion = load_motion(record / "track_0001.npz")
    assert (motion.model_type, motion.body_model, motion["body_pose"].shape) == ("smpl", "smpl", (4, 69))
    model = smplx.SMPL("unused", data_struct=smplx_struct(synthetic_model(SMPL)), num_betas=10, batch_size=4)
    assert np.linalg.norm(posed_by_smplx(motion, model) - motion.joints, axis=-1).max() < TOL
