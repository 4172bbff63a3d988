"""SMPL-format body model: joint sets, rotations, kinematics, loader."""
