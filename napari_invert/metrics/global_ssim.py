"""The paper's SSIM: one global SSIM over the voxels of the original's mask (no window).

What the paper's published numbers (0.73 / 0.61) are. It is much less sensitive to local
structure than the windowed SSIM of :mod:`napari_invert.metrics.ssim` (a skull-stripped mean
brain already scores high), so report it next to a trivial prior. Same constants
(``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``) and the same pitfall: one explicit ``data_range``
``L`` for every pair compared.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_invert.metrics.correlation import (
    DEFAULT_CHUNK_VOXELS,
    ArrayStack,
    masked_moments_matrix,
    masked_values,
)
from napari_invert.metrics.ssim_torch import K1, K2, check_data_range, check_volume_pair

__all__ = ["ssim_global", "ssim_global_matrix"]


def _global_ssim_formula(
    mx: np.ndarray,
    my: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    cov: np.ndarray,
    data_range: float,
    k1: float = K1,
    k2: float = K2,
) -> np.ndarray:
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim_global(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, data_range: float) -> float:
    """The paper's SSIM: one global SSIM over the voxels of the original's mask.

    ``(2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))`` with
    means, population variances and covariance over the mask voxels, ``C1 = (0.01 L)^2``,
    ``C2 = (0.03 L)^2``. No window.

    Parameters
    ----------
    a, b
        ``(X, Y, Z)`` volumes (reconstruction, original); computed in float64.
    mask
        Boolean ``(X, Y, Z)`` — the *original's* mask (``None``: all voxels).
    data_range
        ``L``; explicit and the same for every pair compared.

    Returns
    -------
    float
        In ``[-1, 1]``; 1 for identical images; ``NaN`` for an empty mask.
    """
    a, b = check_volume_pair(a, b, "ssim_global")
    data_range = check_data_range(data_range)
    x, y = masked_values(a, b, mask, "ssim_global")
    if x.size == 0:
        return float("nan")
    mx, my = x.mean(), y.mean()
    xc, yc = x - mx, y - my
    vx, vy = np.mean(xc * xc), np.mean(yc * yc)
    cov = np.mean(xc * yc)
    return float(_global_ssim_formula(mx, my, vx, vy, cov, data_range))


def ssim_global_matrix(
    recons: ArrayStack,
    originals: ArrayStack,
    data_range: float,
    masks: ArrayStack | None = None,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_CHUNK_VOXELS,
    num_threads: int | None = None,
) -> np.ndarray:
    """The paper's global SSIM for every (reconstruction, candidate original) pair.

    Vectorised :func:`ssim_global`: the moments of all pairs come from batched float64
    matrix products (:func:`~napari_invert.metrics.correlation.masked_moments_matrix`).

    Parameters
    ----------
    recons, originals
        ``(N, X, Y, Z)`` and ``(M, X, Y, Z)`` (arrays or sequences).
    data_range
        One ``L`` for all pairs.
    masks
        ``None`` (all voxels) or ``(M, X, Y, Z)`` boolean — mask of each candidate
        original; entry ``(i, j)`` uses ``masks[j]``.
    device, batch_size, num_threads
        Torch device, voxels per chunk, torch CPU threads for this call (``None``:
        unchanged).

    Returns
    -------
    np.ndarray
        ``(N, M)`` float64 in ``[-1, 1]``; higher is more similar.
    """
    data_range = check_data_range(data_range)
    mom = masked_moments_matrix(
        recons, originals, masks, device=device, batch_size=batch_size, num_threads=num_threads
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return _global_ssim_formula(mom.mean_x, mom.mean_y, mom.var_x, mom.var_y, mom.cov, data_range)
