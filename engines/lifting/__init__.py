"""Lifting 2D keypoints to SMPL: the diffusion sampler wrapped for callers, and the
geometry that places the lifted body in the camera."""
