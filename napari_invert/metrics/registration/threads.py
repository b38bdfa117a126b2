"""ANTs (ITK) thread pinning: the condition for reproducible registrations.

ANTs draws random MI samples in its affine stage. With a fixed seed a registration is
bit-for-bit reproducible **only with one ITK thread**: with two threads the same pair gave
mean displacements differing by up to 7.5 % from run to run (24^3 test volumes, 2 mm,
``fast`` preset, measured 2026-12-01), because the threads' partial sums are combined in
whatever order they finish. One thread gave identical values in fresh processes, the
worker pool, local executor processes and Ray workers.

ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, at its *first filter*
(not at ``import ants``); after that the thread count is fixed for the life of the
process. So a process can be pinned only before ITK has run there:
:func:`pin_itk_single_thread` does that and remembers it; in a process where ``ants`` was
already loaded by other code (the caller's interpreter, a reused Ray worker that ran N4
with two threads) it answers ``False`` and the caller registers in a fresh spawned process
instead (:func:`~napari_invert.metrics.registration.matrix.registration_block_unit`).
"""

from __future__ import annotations

import os
import sys

__all__ = ["ITK_THREADS_ENV", "itk_pinned", "pin_itk_single_thread"]

#: The variable ITK reads at its first filter in a process.
ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"

_PINNED = False


def itk_pinned() -> bool:
    """Whether this process's ITK is known to run single-threaded (pinned here)."""
    return _PINNED


def pin_itk_single_thread() -> bool:
    """Make ANTs single-threaded in this process if ITK has not run here yet.

    Sets :data:`ITK_THREADS_ENV` to 1, imports ``ants`` and runs one tiny filter so that ITK
    reads the variable now (later changes of the variable, e.g. by
    :func:`~napari_invert.execution.call_unit` for a multi-core unit, no longer matter).
    Returns ``True`` when this process's ITK is single-threaded (pinned now or earlier),
    ``False`` when ``ants`` was loaded before by other code (its thread count is unknown
    and can no longer be changed).
    """
    global _PINNED
    if _PINNED:
        return True
    if "ants" in sys.modules:
        return False
    os.environ[ITK_THREADS_ENV] = "1"
    import ants
    import numpy as np

    ants.smooth_image(ants.from_numpy(np.zeros((4, 4, 4), dtype=np.float32)), 1.0)
    _PINNED = True
    return True
