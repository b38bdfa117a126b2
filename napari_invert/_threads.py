"""Give the caller its CPU thread settings back after a study, an audit or an evaluation.

The entry points set torch's intra-op thread count (and ``OMP_NUM_THREADS`` for the worker
processes they start) from the config's ``num_threads`` via
:func:`napari_invert.device.set_threads`. In a notebook that would leave the kernel on the
study's one thread for whatever it runs next. :func:`restores_threads` undoes it. torch is
imported only when the decorated function runs, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["restores_threads"]

P = ParamSpec("P")
R = TypeVar("R")


def restores_threads(func: Callable[P, R]) -> Callable[P, R]:
    """Decorator: after ``func`` returns or raises, torch's thread count and
    ``OMP_NUM_THREADS`` (set or unset) are what they were before the call."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import torch

        threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
        try:
            return func(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            if omp is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = omp

    return wrapper
