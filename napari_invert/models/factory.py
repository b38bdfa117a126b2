"""Build, save, load and apply segmenters.

A saved segmenter is a checkpoint (:mod:`napari_invert.checkpoint`): ``stem.safetensors``
holds the weights and ``stem.json`` holds ``{"kind": "segmenter", "arch",
"segmenter_config", "n_classes", "in_channels", ...free meta}``, enough to rebuild the
network from the JSON alone. :func:`load_segmenter` also accepts the resumable training
checkpoint written by :func:`~napari_invert.models.train_segmenter`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_invert.checkpoint import load_module_checkpoint, load_module_state, save_checkpoint
from napari_invert.config import SegmenterConfig
from napari_invert.device import autocast
from napari_invert.errors import CheckpointError, ConfigError
from napari_invert.models.base import Segmenter
from napari_invert.models.segnet import SegNet3D
from napari_invert.models.unet import UNet3D

ARCHITECTURES: dict[str, type[Segmenter]] = {"unet": UNet3D, "segnet": SegNet3D}

#: meta keys written by :func:`save_segmenter` (user meta may not override them)
RESERVED_META = (
    "kind",
    "arch",
    "segmenter_config",
    "n_classes",
    "in_channels",
    "format_version",
    "drop_levels",
)


def build_segmenter(
    arch: str, config: SegmenterConfig, n_classes: int, in_channels: int = 1, drop_levels: int = 0
) -> Segmenter:
    """Create an untrained ``unet`` or ``segnet`` for ``n_classes`` classes (incl. background).

    ``drop_levels``: levels ``0..drop_levels-1`` without skip connections (U-Net) or
    pooling indices (SegNet), the "expose less" defence; 0 (default) is the standard net.

    Weights are initialised from torch's global RNG: call ``torch.manual_seed`` first for
    reproducible initialisation.
    """
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ConfigError(
            f"segmenter architecture: unknown '{arch}' (choose from {sorted(ARCHITECTURES)})"
        ) from None
    if drop_levels:
        return cls(config, n_classes=n_classes, in_channels=in_channels, drop_levels=drop_levels)  # type: ignore[call-arg]
    return cls(config, n_classes=n_classes, in_channels=in_channels)


def segmenter_from_spec(spec: dict[str, Any], source: Any = "<spec>") -> Segmenter:
    """Rebuild an (untrained) segmenter from :meth:`Segmenter.spec` output."""
    try:
        config = SegmenterConfig.model_validate(spec["segmenter_config"])
        return build_segmenter(
            spec["arch"],
            config,
            n_classes=int(spec["n_classes"]),
            in_channels=int(spec["in_channels"]),
            drop_levels=int(spec.get("drop_levels", 0)),
        )
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(
            f"{source}: cannot rebuild the segmenter from its description ({exc})"
        ) from None


def save_segmenter(stem: str | Path, model: Segmenter, meta: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as ``stem.safetensors`` + ``stem.json``; returns the JSON path.

    ``meta``: free JSON-serialisable information (fold, subjects, Dice, ...) stored
    alongside the architecture description.
    """
    extra = {k: v for k, v in (meta or {}).items() if k not in RESERVED_META}
    _, meta_path = save_checkpoint(
        stem, dict(model.state_dict()), {**extra, "kind": "segmenter", **model.spec()}
    )
    return meta_path


def load_segmenter(stem: str | Path, device: str | torch.device = "cpu") -> tuple[Segmenter, dict[str, Any]]:
    """Load a segmenter saved by :func:`save_segmenter` (or a training checkpoint).

    Returns ``(model in eval mode on device, meta)``. Raises
    :class:`~napari_invert.errors.CheckpointError` naming the file when it is missing,
    corrupt or does not describe a segmenter.
    """
    tensors, meta, spec, source = load_module_checkpoint(stem, "segmenter", "a segmenter")
    model = segmenter_from_spec(spec, source)
    load_module_state(model, tensors, source)
    model.to(device)
    model.eval()
    return model, meta


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _logits(model: Segmenter, image: np.ndarray, device: str | torch.device | None) -> torch.Tensor:
    """float32 logits ``(1, C, X, Y, Z)`` of one image ``(X, Y, Z)`` or ``(in_channels, X, Y,
    Z)``, the model in eval mode on ``device`` (default: where its parameters are)."""
    device = _model_device(model) if device is None else torch.device(device)
    model.to(device)
    model.eval()
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if x.ndim == 3:
        x = x[None]
    x = x[None].to(device)
    with autocast(device):
        logits = model(x)
    return logits.float()


@torch.no_grad()
def predict_proba(
    model: Segmenter, image: np.ndarray, device: str | torch.device | None = None
) -> np.ndarray:
    """Softmax class probabilities ``(C, X, Y, Z)`` float32 in [0, 1] for one image
    ``(X, Y, Z)`` (or ``(in_channels, X, Y, Z)``)."""
    return torch.softmax(_logits(model, image, device), dim=1)[0].cpu().numpy()


@torch.no_grad()
def predict(model: Segmenter, image: np.ndarray, device: str | torch.device | None = None) -> np.ndarray:
    """Segment one image.

    Parameters
    ----------
    image
        ``(X, Y, Z)`` float32 (or ``(in_channels, X, Y, Z)``), normalised like the
        training images; spatial sizes divisible by ``pool_size ** levels``.
    device
        Where to run (default: where the model's parameters are).

    Returns
    -------
    ``(X, Y, Z)`` int64 class labels in ``0..n_classes-1`` (argmax of the softmax).
    """
    return _logits(model, image, device).argmax(dim=1)[0].to(torch.int64).cpu().numpy()


def predict_many(
    model: Segmenter,
    images: Iterable[np.ndarray],
    device: str | torch.device | None = None,
    batch_size: int | None = None,
) -> Iterator[np.ndarray]:
    """Segment several images of one shape, ``batch_size`` per forward pass.

    Yields the same labels as :func:`predict` on each image, in input order (the model
    is in eval mode, so normalisation layers do not mix the images of a batch); fewer
    Python round trips and larger convolutions make it faster on a CPU. ``images`` is
    consumed lazily (a generator that loads files keeps at most ``batch_size`` images in
    memory): ``(X, Y, Z)`` or ``(in_channels, X, Y, Z)`` float32 arrays of equal shape.
    Yields ``(X, Y, Z)`` int64 label maps. ``batch_size`` (default: as many images as keep
    the batch's float32 logits within :data:`PREDICT_LOGITS_BUDGET`, at most 8) bounds the
    memory: one 1 mm LPBA40 volume's 57-class logits alone are 1.5 GB, so large volumes
    go one at a time.
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"predict_many: batch_size must be >= 1, got {batch_size}")
    device = _model_device(model) if device is None else torch.device(device)
    model.to(device)
    model.eval()
    return _predict_batches(model, iter(images), device, batch_size)


#: bytes of float32 logits one :func:`predict_many` batch may hold when no batch size is given
PREDICT_LOGITS_BUDGET = 256 * 2**20


def _predict_batches(
    model: Segmenter, source: Iterator[np.ndarray], device: torch.device, batch_size: int | None
) -> Iterator[np.ndarray]:
    first = next(source, None)
    if first is None:
        return
    if batch_size is None:
        per_image = 4 * int(getattr(model, "n_classes", 1)) * int(np.prod(np.shape(first)[-3:]))
        batch_size = int(min(8, max(1, PREDICT_LOGITS_BUDGET // max(per_image, 1))))
    source = itertools.chain([first], source)
    while chunk := [np.asarray(im, dtype=np.float32) for im in itertools.islice(source, batch_size)]:
        x = torch.as_tensor(np.stack([im if im.ndim == 4 else im[None] for im in chunk])).to(device)
        with torch.no_grad(), autocast(device):
            labels = model(x).float().argmax(dim=1).to(torch.int64).cpu().numpy()
        # copies: a kept label map must not keep the whole batch's array alive
        yield from (labels[i].copy() for i in range(len(chunk)))
