"""A memoising decorator for functions that build constant tensors.

The pipeline's stages run under ``torch.inference_mode`` (no autograd bookkeeping: about a
tenth of the lift and fit's CPU time, which is mostly small tensor operations). A tensor
made there is an *inference tensor*, which autograd refuses to save for a backward pass. A
constant cached by a stage (an index plan, a tree matrix) and later used by code that does
need gradients in the same process (training, a gradient check) would then fail there, so
the constants are always built as ordinary tensors.

While ``torch.export`` or ``torch.compile`` traces a caller, the tensors a function makes are
the tracer's placeholders (fake tensors); cached, they would come back to every later eager
call in the process. So nothing is cached while tracing.
"""

from __future__ import annotations

import functools

import torch


def tensor_cache(maxsize: int = 16):
    """``functools.lru_cache(maxsize)`` whose function runs with inference mode off, so the
    tensors it returns serve code with and without autograd alike; while a tracer runs
    (``torch.export``, ``torch.compile``) the function is called afresh and nothing is
    cached."""

    def decorate(fn):
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args, **kwargs):
            with torch.inference_mode(False):
                return fn(*args, **kwargs)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if torch.compiler.is_compiling():
                return fn(*args, **kwargs)
            return cached(*args, **kwargs)

        call.cache_clear = cached.cache_clear
        call.cache_info = cached.cache_info
        return call

    return decorate
