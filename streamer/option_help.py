"""Help texts and checks of the options that several commands share (``run``, ``batch``, ``lift``)."""

from engines.run_defaults import WORLD_WEIGHT

from .errors import ConfigError

BODY_MODEL_HELP = ("pose the outputs on this SMPL, SMPL+H or SMPL-X model: a .pkl/.npz file or a models folder "
                   "in smplx's layout (smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_FEMALE.npz ...); the lift and fit keep "
                   "the bundled model (default: outputs on the bundled anny-smpl)")
GENDER_HELP = "with --body-model: neutral, female or male (default: the file's, or neutral in a folder)"
WORLD_WEIGHT_HELP = (f"how far the keypoint fit trusts the world landmarks' shape (default {WORLD_WEIGHT}, measured "
                     "best for the body; with one camera a higher weight such as 1.5 places the person in depth "
                     "better at some cost to the pose: docs/refinement.md)")


def check_world_weight(weight: float | None) -> None:
    """``--world-weight``: None (the default) or 0 and more; ConfigError otherwise."""
    if weight is not None and not weight >= 0:
        raise ConfigError(f"--world-weight {weight}: give 0 (the fit ignores the landmarks) or more")
