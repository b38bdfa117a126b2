"""Segmenter training: Adam on Dice + cross-entropy (or Dice + focal) to a validation plateau.

:func:`train_segmenter` builds the loss, the augmentation and the validation (mean foreground
Dice against the majority-label baseline of the training labels) of a victim and hands them to
the shared loop :func:`napari_invert.models.training.run_training_loop` (determinism, resumable
checkpoints, plateau, progress and cancellation are described there).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from napari_invert.config import TrainConfig
from napari_invert.device import autocast, configure_backends, resolve_device
from napari_invert.models.augment import augment_batch
from napari_invert.models.base import Segmenter
from napari_invert.models.losses import segmentation_loss
from napari_invert.models.training import (
    OnStep,
    ShouldStop,
    run_training_loop,
    stack_images,
    stage_on_device,
)
from napari_invert.models.validation import (
    Validation,
    majority_label_map,
    mean_foreground_dice,
    segmentation_verdict,
    split_validation,
)

__all__ = ["stack_labels", "train_segmenter"]


def stack_labels(labels: Sequence[np.ndarray], n_classes: int, shape: tuple[int, ...]) -> Tensor:
    """Stack ``N`` integer label maps ``(X, Y, Z)`` into ``(N, 1, X, Y, Z)`` (int16 when the
    classes fit, CPU); raises ValueError naming the map whose shape, dtype or classes
    (outside ``0..n_classes-1``) are wrong."""
    arrs = [np.asarray(a) for a in labels]
    for i, a in enumerate(arrs):
        if a.shape != shape:
            raise ValueError(f"labels[{i}]: shape {a.shape} differs from the images' {shape}")
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"labels[{i}]: expected integer class labels, got {a.dtype}")
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"labels[{i}]: classes must lie in 0..{n_classes - 1}, found {lo}..{hi}")
    dtype = np.int16 if n_classes <= np.iinfo(np.int16).max else np.int64
    return torch.from_numpy(np.stack([a.astype(dtype) for a in arrs])[:, None])


def train_segmenter(
    model: Segmenter,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: TrainConfig,
    device: str | torch.device = "auto",
    checkpoint_stem: str | Path | None = None,
    curve_path: str | Path | None = None,
    progress: bool = True,
    on_step: OnStep | None = None,
    should_stop: ShouldStop | None = None,
    description: str | None = None,
    convergence_path: str | Path | None = None,
    record_info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train a segmenter with Adam on Dice + cross-entropy (or Dice + focal) to a
    validation plateau (:func:`segmentation_loss`, :mod:`~napari_invert.models.validation`).

    Parameters
    ----------
    model
        A :class:`Segmenter` (trained in place; moved to ``device``). On return it holds
        the weights of the best validation Dice (the last weights without validation).
    images
        ``N`` float32 arrays ``(X, Y, Z)`` sharing one shape (divisible by
        ``pool_size**levels``), normalised intensities.
    labels
        ``N`` integer arrays ``(X, Y, Z)`` of classes ``0..model.n_classes-1``.
    config
        Steps (the cap), batch size, lr and schedule, seed, validation and plateau
        settings; ``augment``: intensity jitter and flips along ``flip_axes`` (image and
        labels flipped together; see :mod:`~napari_invert.models.augment`). A
        ``validation_fraction`` of the ``N`` subjects is held out (never trained on) and
        scored by mean foreground Dice every ``validate_every`` steps.
    device
        ``auto`` / ``cpu`` / ``cuda`` or a :class:`torch.device`; bf16 autocast on CUDA.
    description
        Progress-bar label (e.g. ``"fold 0 unet victim"``); default ``"<arch> victim"``.
    convergence_path
        Where the convergence record (JSON) goes: steps run, why it stopped, best Dice, the
        majority-label baseline, ``segments`` and ``segments_reason`` (see
        :func:`~napari_invert.models.validation.segmentation_verdict`), the curve, and
        ``trained_on`` / ``validated_on`` (indices into ``images``). ``record_info`` is
        merged into it (e.g. subject ids).
    checkpoint_stem, curve_path, progress, on_step, should_stop
        See the module docstring (resume, CSV curve, tqdm, callbacks, cancellation).

    Returns
    -------
    Curve rows ``{"step", "loss", "seconds", "batch"}``, one per step run; ``batch`` holds
    indices into ``images``.
    """
    device = resolve_device(device)
    configure_backends(device)
    x_all = stack_images(images, "images")
    if len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} label maps")
    y_all = stack_labels(labels, model.n_classes, tuple(x_all.shape[2:]))
    if x_all.shape[1] != model.in_channels:
        raise ValueError(f"model expects {model.in_channels} input channels, images have 1")
    model.check_input(x_all[:1])
    split = split_validation(len(images), config)
    # channels-last 3D activations make oneDNN's CPU convolutions ~15 % faster per step
    memory_format = torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    loss_fn = segmentation_loss(config=config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    non_blocking = device.type == "cuda"
    val_x = x_all[split.validation]
    val_y = [np.asarray(labels[i]) for i in split.validation]
    x_all, y_all = stage_on_device([x_all, y_all], device)

    def compute_loss(batch: list[int], rng: np.random.Generator) -> Tensor:
        idx = torch.as_tensor(batch)
        x = x_all[idx].to(device, non_blocking=non_blocking)
        y = y_all[idx].to(device, non_blocking=non_blocking).long()
        if config.augment:
            x, y = augment_batch(x, y, config, rng)
        with autocast(device):
            logits = model(x.contiguous(memory_format=memory_format))
        return loss_fn(logits.float(), y)

    validation = None
    if split.validation:

        def score() -> float:
            preds = []
            for i in range(val_x.shape[0]):
                with autocast(device):
                    logits = model(val_x[i : i + 1].to(device).contiguous(memory_format=memory_format))
                preds.append(logits.float().argmax(1)[0].cpu().numpy())
            return mean_foreground_dice(preds, val_y, model.n_classes)

        baseline_map = majority_label_map([np.asarray(labels[i]) for i in split.train])
        baseline = mean_foreground_dice([baseline_map] * len(val_y), val_y, model.n_classes)

        def judge(record: dict[str, Any]) -> dict[str, Any]:
            verdict = segmentation_verdict(
                record.get("best_score"),
                record.get("baseline_score"),
                config.min_validation_dice,
                config.min_dice_gain,
                split.source,
            )
            return {"segments": verdict["segments"], "segments_reason": verdict["reason"]}

        validation = Validation(
            score=score,
            metric="dice",
            higher_is_better=True,
            baseline=baseline,
            baseline_name="majority label per voxel of the training labels",
            info={},
            judge=judge,
        )
    info = {
        "network": "victim",
        "arch": model.arch,
        "validation_source": split.source,
        "validation_note": split.note,
        "trained_on": split.train,
        "validated_on": split.validation,
        "min_validation_dice": config.min_validation_dice,
        "min_dice_gain": config.min_dice_gain,
        **(record_info or {}),
    }
    return run_training_loop(
        module=model,
        optimizer=optimizer,
        n_samples=len(images),
        compute_loss=compute_loss,
        config=config,
        device=device,
        module_meta={"kind": "segmenter", **model.spec()},
        checkpoint_stem=checkpoint_stem,
        curve_path=curve_path,
        progress=progress,
        on_step=on_step,
        should_stop=should_stop,
        description=description or f"{model.arch} victim",
        train_indices=split.train,
        validation=validation,
        convergence_path=convergence_path,
        record_info=info,
    )
