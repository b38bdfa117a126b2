"""Per-subject membership signals: how well a segmenter fits one scan with its labels.

For each subject ``(image (X, Y, Z) float32, labels (X, Y, Z) int)`` the segmenter is run
once (batch of one, no gradient) and three numbers are recorded:

* ``loss``: the training loss, Dice + cross-entropy (:class:`IndexedDiceCELoss`, the loss
  :func:`~napari_invert.models.train_segmenter` minimises), >= 0; lower = better fit;
* ``dice``: mean Dice of the argmax prediction over the foreground classes present in the
  labels or the prediction, in [0, 1]; higher = better fit;
* ``confidence``: mean softmax probability of the true class over all voxels, in [0, 1].

A network fits its training subjects better than unseen ones; membership attacks turn that
gap into a decision. :func:`member_score` maps each signal to a "higher = more
member-like" scale, logit-scaled where the signal is a probability (Carlini et al. 2022:
logit-scaled confidences are close to Gaussian, which the likelihood-ratio attack assumes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from napari_invert.device import autocast
from napari_invert.models.base import Segmenter
from napari_invert.models.training import IndexedDiceCELoss

#: The signals computed for every subject.
SIGNALS = ("loss", "dice", "confidence")


class SubjectLike(Protocol):
    """Anything with ``subject_id``, ``image (X, Y, Z)`` and ``labels (X, Y, Z)`` (e.g.
    :class:`napari_invert.data.prepare.PreparedSubject`)."""

    subject_id: str
    image: np.ndarray
    labels: np.ndarray | None


@dataclass
class SignalScores:
    """Signals of one segmenter on ``N`` subjects (arrays ``(N,)`` float64)."""

    subject_ids: list[str]
    loss: np.ndarray
    dice: np.ndarray
    confidence: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.subject_ids)

    def signal(self, name: str) -> np.ndarray:
        """The raw values of signal ``name`` (one of :data:`SIGNALS`)."""
        if name not in SIGNALS:
            raise ValueError(f"unknown membership signal '{name}' (choose from {SIGNALS})")
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_ids": list(self.subject_ids),
            **{name: self.signal(name).tolist() for name in SIGNALS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SignalScores:
        return cls(
            subject_ids=list(data["subject_ids"]),
            **{name: np.asarray(data[name], dtype=np.float64) for name in SIGNALS},
        )


def member_score(name: str, values: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Signal values on a "higher = more member-like" scale.

    ``loss`` -> ``-log(loss)``; ``dice`` and ``confidence`` -> ``logit(clip(v, eps,
    1 - eps))``. Monotone per signal, so AUCs of threshold attacks do not change.
    """
    v = np.asarray(values, dtype=np.float64)
    if name == "loss":
        return -np.log(np.clip(v, 1e-12, None))
    if name in ("dice", "confidence"):
        c = np.clip(v, eps, 1.0 - eps)
        return np.log(c) - np.log1p(-c)
    raise ValueError(f"unknown membership signal '{name}' (choose from {SIGNALS})")


def foreground_dice(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> float:
    """Mean Dice over classes ``1..n_classes-1`` present in ``ref`` or ``pred`` (1.0 when
    neither has any foreground)."""
    p = np.asarray(pred).ravel()
    r = np.asarray(ref).ravel()
    inter = np.bincount(r[p == r], minlength=n_classes)[:n_classes]
    sp = np.bincount(p, minlength=n_classes)[:n_classes]
    sr = np.bincount(r, minlength=n_classes)[:n_classes]
    present = (sp + sr)[1:] > 0
    if not present.any():
        return 1.0
    dice = 2.0 * inter[1:][present] / (sp[1:][present] + sr[1:][present])
    return float(dice.mean())


def _device_of(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def score_volumes(
    model: Segmenter,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    subject_ids: Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> SignalScores:
    """Signals of ``model`` on each ``(image, labels)`` pair, one volume at a time.

    ``images``: float32 ``(X, Y, Z)`` normalised like the training images; ``labels``:
    int ``(X, Y, Z)`` in ``0..model.n_classes-1``. The model is put in eval mode.
    """
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} label maps")
    ids = [str(i) for i in (subject_ids if subject_ids is not None else range(len(images)))]
    if len(ids) != len(images):
        raise ValueError(f"got {len(images)} images but {len(ids)} subject ids")
    dev = _device_of(model) if device is None else torch.device(device)
    model.to(dev)
    model.eval()
    loss_fn = IndexedDiceCELoss()
    n_classes = model.n_classes
    out = {name: np.empty(len(images)) for name in SIGNALS}
    for i, (image, lab) in enumerate(zip(images, labels)):
        if lab is None:
            raise ValueError(f"subject {ids[i]}: membership signals need its label map")
        lab = np.asarray(lab)
        if lab.shape != np.shape(image):
            raise ValueError(f"subject {ids[i]}: labels {lab.shape} and image {np.shape(image)} differ")
        if lab.min() < 0 or lab.max() >= n_classes:
            raise ValueError(f"subject {ids[i]}: labels must lie in 0..{n_classes - 1}")
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None].to(dev)
        y = torch.as_tensor(lab.astype(np.int64))[None, None].to(dev)
        with autocast(dev):
            logits = model(x)
        logits = logits.float()
        out["loss"][i] = float(loss_fn(logits, y))
        prob_true = torch.softmax(logits, dim=1).gather(1, y)
        out["confidence"][i] = float(prob_true.mean())
        pred = logits.argmax(dim=1)[0].cpu().numpy()
        out["dice"][i] = foreground_dice(pred, lab, n_classes)
    return SignalScores(ids, out["loss"], out["dice"], out["confidence"])


def score_subjects(
    model: Segmenter, subjects: Sequence[SubjectLike], device: str | torch.device | None = None
) -> SignalScores:
    """:func:`score_volumes` for subject records (``subject_id``, ``image``, ``labels``)."""
    return score_volumes(
        model,
        [s.image for s in subjects],
        [s.labels for s in subjects],  # type: ignore[misc]
        [s.subject_id for s in subjects],
        device,
    )
