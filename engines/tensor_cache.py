"""A memoising decorator for functions that build constant tensors.

The pipeline's stages run under ``torch.inference_mode`` (no autograd bookkeeping: about a
tenth of the lift and fit's CPU time, which is mostly small tensor operations). A tensor
made there is an *inference tensor*, which autograd refuses to save for a backward pass. A
constant cached by a stage (an index plan, a tree matrix) and later used by code that does
need gradients in the same process (training, a gradient check) would then fail there, so
the constants are always built as ordinary tensors.
"""

from __future__ import annotations

import functools

import torch


def tensor_cache(maxsize: int = 16):
    """``functools.lru_cache(maxsize)`` whose function runs with inference mode off, so the
    tensors it returns serve code with and without autograd alike."""

    def decorate(fn):
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(fn)
        def cached(*args, **kwargs):
            with torch.inference_mode(False):
                return fn(*args, **kwargs)

        return cached

    return decorate
