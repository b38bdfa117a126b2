"""Dice similarity coefficient per class for label volumes.

``Dice_c = 2 |P_c ∩ R_c| / (|P_c| + |R_c|)`` for each class ``c`` (``P`` prediction,
``R`` reference), in ``[0, 1]``. A class absent from both volumes has no defined Dice and
is reported as ``NaN`` (and skipped by :func:`mean_dice`); a class present in only one of
them scores 0.

In the paper, the reconstructions are segmented with the victim network and compared with
the manual labels (and the segmentation of the original), giving the "reconstruction
Dice" (0.37 U-Net / 0.32 SegNet vs 0.53 / 0.48 on the originals).

A segmenter is only worth attacking if it beats a predictor that ignores the image:
:func:`majority_label_map` (the most frequent class at each voxel over the training label
maps, i.e. an atlas of the training set) and :func:`majority_baseline_dice` (its Dice
against label maps it was not built from) give that baseline.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["dice_per_class", "majority_baseline_dice", "majority_label_map", "mean_dice"]


def _confusion(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> np.ndarray:
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"dice: shapes differ ({pred.shape} vs {ref.shape})")
    if n_classes < 1:
        raise ValueError(f"dice: n_classes must be >= 1, got {n_classes}")
    for name, arr in (("pred", pred), ("ref", ref)):
        is_int = np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
        if not is_int and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"dice: {name} has non-integer labels")
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(
                f"dice: {name} labels must lie in [0, {n_classes - 1}], found [{arr.min()}, {arr.max()}]"
            )
    p = pred.astype(np.int64, copy=False).ravel()
    r = ref.astype(np.int64, copy=False).ravel()
    counts = np.bincount(p * n_classes + r, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)  # [pred class, ref class]


def dice_per_class(
    pred: np.ndarray, ref: np.ndarray, n_classes: int, ignore_background: bool = True
) -> np.ndarray:
    """Dice of each class between a predicted and a reference label volume.

    Parameters
    ----------
    pred, ref
        Integer label volumes of equal shape (any dimensionality), values in
        ``0 .. n_classes - 1`` (contiguous classes; 0 = background).
    n_classes
        Number of classes ``C`` including background.
    ignore_background
        Drop class 0 (default), returning ``C - 1`` values for classes ``1 .. C-1``.

    Returns
    -------
    np.ndarray
        float64 ``(C - 1,)`` (or ``(C,)``) in ``[0, 1]``; ``NaN`` where the class is
        absent from both volumes.
    """
    conf = _confusion(pred, ref, n_classes)
    inter = np.diag(conf).astype(np.float64)
    size_p = conf.sum(axis=1).astype(np.float64)
    size_r = conf.sum(axis=0).astype(np.float64)
    den = size_p + size_r
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(den > 0, 2.0 * inter / np.where(den > 0, den, 1.0), np.nan)
    return dice[1:] if ignore_background else dice


def mean_dice(pred: np.ndarray, ref: np.ndarray, n_classes: int, ignore_background: bool = True) -> float:
    """Mean of :func:`dice_per_class` over the classes present in either volume.

    Returns ``NaN`` (without a warning) when no class is present at all.
    """
    d = dice_per_class(pred, ref, n_classes, ignore_background=ignore_background)
    if not np.any(np.isfinite(d)):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(d))


def majority_label_map(label_maps: Sequence[np.ndarray], n_classes: int, chunk: int = 1 << 18) -> np.ndarray:
    """The most frequent class at each voxel over ``label_maps`` (ties -> the lower class).

    ``label_maps``: integer volumes of one shape, classes ``0 .. n_classes - 1``. Returns an
    int64 volume of that shape: the prediction of a "segmenter" that outputs the training
    set's majority label whatever the image (a trivial baseline). Memory: ``n_classes x
    chunk`` counters at a time.
    """
    if not label_maps:
        raise ValueError("majority_label_map: no label maps")
    shape = np.shape(label_maps[0])
    if any(np.shape(m) != shape for m in label_maps):
        raise ValueError("majority_label_map: label maps differ in shape")
    flat = [np.asarray(m).ravel() for m in label_maps]
    for f in flat:
        if f.size and (int(f.min()) < 0 or int(f.max()) >= n_classes):
            raise ValueError(f"majority_label_map: labels must lie in [0, {n_classes - 1}]")
    n_vox = int(np.prod(shape))
    out = np.empty(n_vox, dtype=np.int64)
    for start in range(0, n_vox, chunk):
        stop = min(start + chunk, n_vox)
        width = stop - start
        pos = np.arange(width, dtype=np.int64)
        counts = np.zeros(n_classes * width, dtype=np.int64)
        for f in flat:
            counts += np.bincount(f[start:stop].astype(np.int64) * width + pos, minlength=n_classes * width)
        out[start:stop] = counts.reshape(n_classes, width).argmax(axis=0)
    return out.reshape(shape)


def majority_baseline_dice(
    train_labels: Sequence[np.ndarray], test_labels: Sequence[np.ndarray], n_classes: int
) -> np.ndarray:
    """Mean foreground Dice of :func:`majority_label_map` of ``train_labels`` on each test map.

    Returns float64 ``(len(test_labels),)``: what a segmenter that ignores the image scores
    on unseen subjects. A victim whose Dice on unseen subjects is close to this has learnt
    little more than where structures usually are.
    """
    atlas = majority_label_map(train_labels, n_classes)
    return np.array([mean_dice(atlas, t, n_classes) for t in test_labels], dtype=np.float64)
