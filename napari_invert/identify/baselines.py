"""Re-identification baselines: how far identification gets *without* the image content.

A reconstruction can pick out its subject from the outline of the skull strip alone (the
brain-mask shape differs between people), or because the scores are computed inside each
candidate's own mask. These baselines say how much of a re-identification result such
shortcuts explain:

* :func:`mask_shape_similarity` — Dice of the thresholded reconstruction with each candidate's
  brain mask: identification by shape alone;
* :func:`common_mask` — one mask shared by all candidates (their intersection): scores computed
  inside it cannot use the outline;
* the attacker's mean image (its prior) ranked like a reconstruction — what "no information
  about the subject" identifies (computed by :mod:`napari_invert.report.controls`).
"""

from __future__ import annotations

import numpy as np


def foreground(volume: np.ndarray) -> np.ndarray:
    """Boolean foreground of a reconstruction ``(X, Y, Z)`` by Otsu's threshold.

    Pitfall: a constant volume has no foreground (returns all False).
    """
    from skimage.filters import threshold_otsu

    v = np.asarray(volume, dtype=np.float32)
    if not np.isfinite(v).all():
        raise ValueError("volume has NaN or Inf values")
    if float(v.max()) <= float(v.min()):
        return np.zeros(v.shape, dtype=bool)
    return v > threshold_otsu(v)


def mask_shape_similarity(recons: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Dice of each thresholded reconstruction with each candidate mask.

    Parameters
    ----------
    recons
        ``(N, X, Y, Z)`` reconstructions (any intensity scale).
    masks
        ``(M, X, Y, Z)`` boolean brain masks of the candidates.

    Returns
    -------
    ``(N, M)`` float array in [0, 1]; higher = more similar shape.
    """
    recons = np.asarray(recons)
    masks = np.asarray(masks, dtype=bool)
    if recons.ndim != 4 or masks.ndim != 4 or recons.shape[1:] != masks.shape[1:]:
        raise ValueError(f"shapes do not match: recons {recons.shape}, masks {masks.shape}")
    fg = np.stack([foreground(r) for r in recons]).reshape(len(recons), -1).astype(np.float32)
    mk = masks.reshape(len(masks), -1).astype(np.float32)
    inter = fg @ mk.T
    sizes = fg.sum(axis=1)[:, None] + mk.sum(axis=1)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(sizes > 0, 2.0 * inter / sizes, 0.0)
    return dice.astype(float)


def common_mask(masks: np.ndarray) -> np.ndarray:
    """Intersection of all candidate masks ``(M, X, Y, Z)`` -> ``(X, Y, Z)`` bool.

    Raises ``ValueError`` when the masks share no voxel.
    """
    masks = np.asarray(masks, dtype=bool)
    common = masks.all(axis=0)
    if not common.any():
        raise ValueError("the candidate masks have no voxel in common")
    return common
