"""Segmentation losses of the victims (Dice + cross-entropy / focal), from class indices.

:class:`IndexedDiceCELoss` computes MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True,
batch=True)`` (checked against MONAI in the tests) without building a one-hot target;
its options mirror MONAI's ``include_background`` and ``squared_pred``.
:func:`segmentation_loss` picks the loss a :class:`~napari_invert.config.TrainConfig`
asks for.
"""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceFocalLoss
from torch import Tensor, nn

from napari_invert.config import TrainConfig


class IndexedDiceCELoss(nn.Module):
    """Dice + cross-entropy computed from class-index targets without a one-hot tensor.

    With the defaults numerically the same loss as MONAI's ``DiceCELoss(to_onehot_y=True,
    softmax=True, batch=True)`` (smooth_nr = smooth_dr = 1e-5, Dice averaged over
    classes, mean cross-entropy), but with many classes it skips building a ``(B, C, X, Y,
    Z)`` one-hot target and a second softmax: per-class intersections are a scatter-add of
    the true-class probabilities and the reference volumes a ``bincount``.

    ``include_background=False`` leaves class 0 out of the Dice mean (cross-entropy keeps
    it); ``squared_pred=True`` uses ``sum p²`` for the predicted volume (MONAI's
    ``squared_pred``). ``forward(logits (B, C, X, Y, Z) float, target (B, 1, X, Y, Z) int64
    in 0..C-1)`` returns a scalar >= 0.
    """

    def __init__(
        self,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        include_background: bool = True,
        squared_pred: bool = False,
    ) -> None:
        super().__init__()
        self.smooth_nr = smooth_nr
        self.smooth_dr = smooth_dr
        self.include_background = include_background
        self.squared_pred = squared_pred

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        n_classes = logits.shape[1]
        target = target.long()
        logp = torch.log_softmax(logits, dim=1)
        ce = torch.nn.functional.nll_loss(logp, target[:, 0])
        prob = logp.exp()
        flat = target.reshape(-1)
        true_prob = prob.gather(1, target).reshape(-1)
        intersection = torch.zeros(n_classes, dtype=prob.dtype, device=prob.device)
        intersection = intersection.index_add(0, flat, true_prob)
        reference = torch.bincount(flat, minlength=n_classes).to(prob.dtype)
        p = prob * prob if self.squared_pred else prob
        predicted = p.sum(dim=[0, *range(2, prob.ndim)])
        dice = 1.0 - (2.0 * intersection + self.smooth_nr) / (reference + predicted + self.smooth_dr)
        if not self.include_background and n_classes > 1:
            dice = dice[1:]
        return ce + dice.mean()


class _OneHotLoss(nn.Module):
    """Wrap a MONAI loss that wants one-hot targets (targets given as class indices)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        onehot = torch.nn.functional.one_hot(target[:, 0].long(), logits.shape[1])
        onehot = onehot.movedim(-1, 1).to(logits.dtype)
        return self.loss(logits, onehot)


def segmentation_loss(impl: str = "indexed", config: TrainConfig | None = None) -> nn.Module:
    """The victims' loss, ``loss(logits (B, C, X, Y, Z), target (B, 1, X, Y, Z) int64)``.

    ``config`` (when given) chooses ``segmentation_loss`` (``dice_ce`` / ``dice_focal``),
    ``dice_include_background`` and ``dice_squared_pred``; Dice is always over the whole
    batch (classes absent from one volume give no degenerate Dice terms). ``impl``:
    ``"indexed"`` (default, :class:`IndexedDiceCELoss`, ~2x cheaper with many classes) or
    ``"monai"`` (MONAI's ``DiceCELoss``, the reference implementation).
    """
    include_bg = True if config is None else config.dice_include_background
    squared = False if config is None else config.dice_squared_pred
    if config is not None and config.segmentation_loss == "dice_focal":
        return _OneHotLoss(
            DiceFocalLoss(softmax=True, batch=True, include_background=include_bg, squared_pred=squared)
        )
    if impl == "monai":
        return DiceCELoss(
            to_onehot_y=True, softmax=True, batch=True, include_background=include_bg, squared_pred=squared
        )
    if impl == "indexed":
        return IndexedDiceCELoss(include_background=include_bg, squared_pred=squared)
    raise ValueError(f"unknown segmentation loss implementation '{impl}'")
