"""The conditional diffusion model over SMPL pose and shape: the noise schedule and DDIM
sampler (kept apart from the network, as in ``diffusers``), the denoiser network, and the
conditioning features computed from 2D keypoints and the camera."""
