"""Everything that computes: backends, perception models, the body model, the diffusion
model and its guidance. Never imports :mod:`streamer`."""
