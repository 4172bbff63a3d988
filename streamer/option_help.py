"""Help texts of the options that several commands share (``run``, ``batch``, ``lift``)."""

BODY_MODEL_HELP = ("pose the outputs on this SMPL, SMPL+H or SMPL-X model: a .pkl/.npz file or a models folder "
                   "in smplx's layout (smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_FEMALE.npz ...); the lift and fit keep "
                   "the bundled model (default: outputs on the bundled anny-smpl)")
GENDER_HELP = "with --body-model: neutral, female or male (default: the file's, or neutral in a folder)"
