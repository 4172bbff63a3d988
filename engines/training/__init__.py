"""Training and evaluation of the diffusion lifter: mocap poses seen by random virtual
cameras with detector-like keypoint noise, the training loop, and held-out evaluation."""
