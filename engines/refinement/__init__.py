"""Temporal score-guided refinement (ScoreHMR, online): guidance losses, the guided DDIM
sampler, per-track fixed-lag window refinement, and classic smoothers to compare against."""
