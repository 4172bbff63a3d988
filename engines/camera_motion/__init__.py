"""The camera's own motion: its rotation per frame from the video (background features,
people masked out), an optional IMU orientation stream fused with it, and the
gravity-aligned world frame the outputs can be put in (``docs/head-mounted.md``).

Camera frames are OpenCV's (x right, y down, z forward). Rotations here are 3x3 matrices;
``R_a_b`` maps vectors written in frame ``b`` into frame ``a``."""
