"""Paired differences: the same subjects measured twice (as member and as non-member).

With ``holdout: fold`` every subject is reconstructed once from the fold where it trained the
victim (member) and once from a fold where it was held out (non-member), by decoders of the
same kind. The per-subject difference removes between-subject variation, so the comparison is
paired: a bootstrap over subjects for the interval and a sign-flip permutation test for p.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from napari_invert.identify.intervals import Difference, mean_interval


def paired_difference_interval(
    a: Any, b: Any, n_boot: int = 2000, n_perm: int = 5000, seed: int = 0, level: float = 0.95
) -> Difference:
    """Mean of ``a - b`` over pairs, percentile bootstrap interval and two-sided sign-flip p.

    Parameters
    ----------
    a, b
        Equal-length 1-D samples, ``a[i]`` and ``b[i]`` measured on the same subject.
    n_boot, n_perm, seed, level
        Bootstrap resamples, sign-flip permutations (exact enumeration when ``2**n <= n_perm``),
        RNG seed and interval level.

    Returns
    -------
    :class:`~napari_invert.identify.intervals.Difference` with ``n_a == n_b == n`` pairs.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size != y.size or x.size == 0:
        raise ValueError(f"paired samples need equal, non-zero lengths (got {x.size} and {y.size})")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired samples contain NaN or Inf")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d = x - y
    observed = float(d.mean())
    lo, hi = mean_interval(d, n_boot=n_boot, seed=seed, level=level)
    if 2**d.size <= n_perm:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        exact = True
    else:
        signs = np.random.default_rng(seed + 1).choice((1.0, -1.0), size=(n_perm, d.size))
        exact = False
    flipped = np.abs((signs * d).mean(axis=1))
    hits = int(np.sum(flipped >= abs(observed) - 1e-12 * max(1.0, abs(observed))))
    p = hits / len(signs) if exact else (1 + hits) / (1 + len(signs))
    return Difference(observed, (float(lo), float(hi)), float(p), int(d.size), int(d.size), level)
