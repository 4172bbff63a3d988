"""Camera models, checkerboard calibration, undistortion and head-mounted rig extrinsics."""
