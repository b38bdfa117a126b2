"""Dice per class: hand-computed answers and agreement with MONAI's DiceMetric."""

from __future__ import annotations

import numpy as np
import pytest

from napari_invert.metrics import dice_per_class, mean_dice


def test_hand_computed() -> None:
    ref = np.array([[0, 1, 1, 2], [0, 1, 2, 2]])
    pred = np.array([[0, 1, 2, 2], [1, 1, 2, 0]])
    # class 1: ref 3 voxels, pred 3 voxels, overlap 2 -> 4/6
    # class 2: ref 3 voxels, pred 3 voxels, overlap 2 -> 4/6
    # class 3: absent in both -> NaN
    d = dice_per_class(pred, ref, n_classes=4)
    assert d.shape == (3,)
    np.testing.assert_allclose(d[:2], [4 / 6, 4 / 6])
    assert np.isnan(d[2])
    assert mean_dice(pred, ref, 4) == pytest.approx(4 / 6)
    full = dice_per_class(pred, ref, 4, ignore_background=False)
    assert full[0] == pytest.approx(2 * 1 / (2 + 2))  # background: ref 2, pred 2, overlap 1


def test_edge_cases() -> None:
    ref = np.zeros((4, 4, 4), dtype=np.int64)
    pred = ref.copy()
    pred[0, 0, 0] = 1  # class 1 only in the prediction -> 0, class 2 absent -> NaN
    d = dice_per_class(pred, ref, 3)
    assert d[0] == 0.0 and np.isnan(d[1])
    assert np.isnan(mean_dice(ref, ref, 3))  # no foreground class anywhere: NaN, no warning
    assert mean_dice(pred, pred, 3) == 1.0
    with pytest.raises(ValueError, match="labels must lie"):
        dice_per_class(pred + 5, ref, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_class(pred[:2], ref, 3)
    with pytest.raises(ValueError, match="non-integer"):
        dice_per_class(pred + 0.5, ref, 3)


def test_agrees_with_monai() -> None:
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    rng = np.random.default_rng(0)
    n_classes = 5
    ref = rng.integers(0, n_classes, size=(16, 16, 12))
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, n_classes, ref.shape))
    ours = dice_per_class(pred, ref, n_classes)

    def oh(a: np.ndarray) -> torch.Tensor:
        return one_hot(torch.as_tensor(a)[None, None], num_classes=n_classes)

    metric = DiceMetric(include_background=False, reduction="none")
    theirs = metric(oh(pred), oh(ref)).numpy()[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
