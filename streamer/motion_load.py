"""Reading a motion file back as the parameters smplx takes: :func:`load_motion`.

A track's ``track_NNNN.npz`` (``run --record``, ``lift``) holds ``poses`` (T, 3J): the
axis-angle of every joint of its body model, root first, in smplx's joint order (J = 24
for SMPL and the bundled model, 52 for SMPL+H, 55 for SMPL-X), ``trans`` (smplx's
``transl``), ``betas_per_frame`` and ``joints``, in the camera frame. :func:`smplx_layout`
cuts ``poses`` into smplx's keyword arguments; files written with a user's model carry
those keys too (:func:`file_layout`).

Example (docs/motion-files.md)::

    motion = load_motion("rec/track_0001.npz")              # numpy arrays, camera frame
    body = smplx.create("models", **motion.create_kwargs)   # the track's model and gender
    joints = body(**{k: torch.from_numpy(v) for k, v in motion.items()}).joints  # [:, :J] == motion.joints
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from .errors import SmplstreamError

#: Frames :func:`load_motion` gives parameters in.
FRAMES = ("camera", "y_up")
#: Camera frame (OpenCV: x right, y down, z forward) -> Y up: 180 degrees about x, as the
#: BVH and .smpl files turn it (without their floor shift).
CAMERA_TO_Y_UP = np.diag([1.0, -1.0, -1.0])
#: smplx's model type by the width of ``poses`` (3 numbers a joint).
MODEL_TYPES = {72: "smpl", 156: "smplh", 165: "smplx"}
#: smplx's keyword arguments after the body's 21 joints, (name, first joint, joint count).
_TAIL = {
    "smplh": (("left_hand_pose", 22, 15), ("right_hand_pose", 37, 15)),
    "smplx": (("jaw_pose", 22, 1), ("leye_pose", 23, 1), ("reye_pose", 24, 1),
              ("left_hand_pose", 25, 15), ("right_hand_pose", 40, 15)),
}
#: Expression coefficients an SMPL-X track gets (all zero: the face stays at rest).
EXPRESSION_COEFFS = 10


class MotionFileError(SmplstreamError, ValueError):
    """A motion file that cannot be read as smplx parameters; the message names the file."""


def smplx_layout(poses: np.ndarray, trans: np.ndarray) -> dict[str, np.ndarray]:
    """smplx's keyword arguments from ``poses`` (T, 3J) and ``trans`` (T, 3): ``global_orient``
    (T, 3), ``body_pose`` (T, 69) for SMPL or (T, 63) for SMPL+H and SMPL-X, ``transl``, and
    for SMPL+H / SMPL-X the hands' (T, 45) and SMPL-X's jaw and eye poses (T, 3). float32.
    Raises ValueError for a width that is no SMPL-family model's."""
    poses = np.asarray(poses, np.float32)
    T = len(poses)
    model_type = MODEL_TYPES.get(poses.shape[1] if poses.ndim == 2 else -1)
    if model_type is None:
        raise ValueError(f"poses of shape {poses.shape}; expected (T, 72) SMPL, (T, 156) SMPL+H or (T, 165) SMPL-X")
    body_end = 24 if model_type == "smpl" else 22
    joints = poses.reshape(T, -1, 3)
    out = {"global_orient": joints[:, 0].copy(), "body_pose": joints[:, 1:body_end].reshape(T, -1),
           "transl": np.asarray(trans, np.float32).reshape(T, 3)}
    for name, first, count in _TAIL.get(model_type, ()):
        out[name] = joints[:, first:first + count].reshape(T, -1)
    return out


def file_layout(poses: np.ndarray, trans: np.ndarray, gender: str) -> dict[str, np.ndarray]:
    """What a motion file of a user's model carries beside the AMASS-style keys: ``gender``
    and smplx's parameter layout (:func:`smplx_layout`)."""
    return {"gender": np.str_(gender), **smplx_layout(poses, trans)}


class SmplxMotion(dict):
    """smplx's keyword arguments for a track (``dict`` of float32 numpy arrays, T frames),
    with what smplx needs to build the model and the file's joints to compare with.

    Attributes:
        model_type: ``smpl``, ``smplh`` or ``smplx``.
        gender: ``neutral``, ``female`` or ``male``.
        body_model: the file's ``body_model`` (``anny-smpl`` for the bundled model).
        joints: (T, J, 3) the file's joints in ``frame``.
        frame: ``camera`` or ``y_up``.
        frame_index: (T,) source frame of each row; fps: the source's rate.
    """

    model_type: str
    gender: str
    body_model: str
    joints: np.ndarray
    frame: str
    frame_index: np.ndarray
    fps: float

    @property
    def create_kwargs(self) -> dict:
        """Arguments for ``smplx.create(models_folder, **create_kwargs)``: the model type and
        gender, betas and batch size as the track has them, hand poses as axis-angle
        (``use_pca=False``) relative to flat hands (``flat_hand_mean=True``: hands at rest
        are flat, as the track's)."""
        kwargs = {"model_type": self.model_type, "gender": self.gender, "num_betas": self["betas"].shape[1],
                  "batch_size": len(self["transl"])}
        if self.model_type != "smpl":
            kwargs.update(use_pca=False, flat_hand_mean=True)
        if self.model_type == "smplx":
            kwargs["num_expression_coeffs"] = EXPRESSION_COEFFS
        return kwargs


def load_motion(path: str | Path, frame: str = "camera") -> SmplxMotion:
    """A recorded track's parameters, ready for smplx (see the module docstring).

    Args:
        path: a ``track_NNNN.npz`` motion file.
        frame: ``camera`` (the file's frame: OpenCV axes, x right, y down, z forward) or
            ``y_up`` (turned 180 degrees about the camera's x axis: x right, y up, z towards
            the camera; no floor shift). In ``y_up`` the root's rotation is turned and
            ``transl`` moves so that the body turns about the camera, not about its pelvis:
            ``transl' = C (J0 + transl) - J0`` with ``J0`` the rest pelvis (``joints[:, 0] -
            trans`` in the file).

    Returns:
        :class:`SmplxMotion`: ``global_orient``, ``body_pose``, ``transl``, ``betas`` (T, S)
        and for SMPL+H / SMPL-X the hand, jaw and eye poses and zero ``expression``, all
        float32; smplx's joints for them equal ``motion.joints``.

    Raises:
        MotionFileError: the file is missing, unreadable or not an SMPL motion file.
    """
    p = Path(path)
    if frame not in FRAMES:
        raise ValueError(f"frame {frame!r}: choose one of {', '.join(FRAMES)}")
    if not p.is_file():
        raise MotionFileError(f"{p}: no such motion file")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 -- zip, pickle and format errors all mean unreadable
        raise MotionFileError(f"{p}: not a readable .npz motion file ({exc})") from None
    missing = [k for k in ("poses", "trans", "joints") if k not in data]
    if missing:
        raise MotionFileError(f"{p}: not an SMPL motion file, missing {', '.join(missing)} (see docs/motion-files.md)")
    poses, trans, joints = data["poses"], data["trans"], np.asarray(data["joints"], np.float64)
    try:
        params = smplx_layout(poses, trans)
    except ValueError as exc:
        raise MotionFileError(f"{p}: {exc}") from None
    T = len(poses)
    J = poses.shape[1] // 3
    if joints.shape[:2] != (T, J) or trans.shape != (T, 3):
        raise MotionFileError(f"{p}: joints {joints.shape} and trans {trans.shape} do not match poses {poses.shape} "
                              f"(expected ({T}, {J}, 3) and ({T}, 3))")
    betas = data.get("betas_per_frame")  # the shape each frame's joints were posed with
    if betas is None:
        betas = np.tile(np.asarray(data.get("betas", np.zeros(10))).reshape(1, -1), (T, 1))
    params["betas"] = np.asarray(betas, np.float32).reshape(T, -1)
    model_type = MODEL_TYPES[poses.shape[1]]
    if model_type == "smplx":
        params["expression"] = np.zeros((T, EXPRESSION_COEFFS), np.float32)
    if frame == "y_up":
        params, joints = _turned(params, joints, CAMERA_TO_Y_UP)
    motion = SmplxMotion({k: np.ascontiguousarray(v, np.float32) for k, v in params.items()})
    motion.model_type = model_type
    motion.gender = str(data.get("gender", "neutral"))
    motion.body_model = str(data.get("body_model", "unknown"))
    motion.joints = joints.astype(np.float32)
    motion.frame = frame
    motion.frame_index = np.asarray(data.get("frame_index", np.arange(T)), np.int64)
    motion.fps = float(data.get("mocap_framerate", np.nan))
    return motion


def _turned(params: dict, joints: np.ndarray, C: np.ndarray) -> tuple[dict, np.ndarray]:
    """``params`` and ``joints`` with the whole scene turned by the rotation ``C`` about the
    origin. The root turns about its rest pelvis J0 (posed pelvis = J0 + transl), so the
    translation must carry J0 round too."""
    out = dict(params)
    turned = Rotation.from_matrix(C) * Rotation.from_rotvec(params["global_orient"].astype(np.float64))
    out["global_orient"] = turned.as_rotvec().astype(np.float32)
    transl = params["transl"].astype(np.float64)
    rest_pelvis = joints[:, 0] - transl
    out["transl"] = ((rest_pelvis + transl) @ C.T - rest_pelvis).astype(np.float32)
    return out, joints @ C.T
