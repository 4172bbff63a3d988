"""Committed body model files (anny-based SMPL-format model) and their licences."""
