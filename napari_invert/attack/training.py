"""Training the inversion decoder on the attacker's own images, and reconstructing.

The attacker minimises ``|| D̂(taps(X)) - X ||²`` (paper eq. 1) over ``X`` in its attack
set ``X_attack`` ONLY: :func:`train_inversion_decoder` receives nothing but the attack
images, the frozen victim (through the tapper) and a config. It never sees a private
image; every returned curve row lists (``batch``) the attack-set indices that step used.
Private subjects are touched only afterwards, by :func:`reconstruct`, in eval mode and
without gradients.

It uses the same loop as segmenter training
(:func:`napari_invert.models.training.run_training_loop`): deterministic per-step sampling,
resumable safetensors checkpoints, CSV curve, tqdm, ``on_step`` / ``should_stop``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import Tensor

from napari_invert.attack.decoder import InversionDecoder
from napari_invert.attack.taps import Tapper
from napari_invert.config import TrainConfig
from napari_invert.device import autocast, configure_backends, resolve_device
from napari_invert.errors import ConfigError
from napari_invert.models.augment import augment_batch
from napari_invert.models.training import (
    OnStep,
    ShouldStop,
    run_training_loop,
    stack_images,
    stage_on_device,
)
from napari_invert.models.validation import Validation, split_validation

LossName = Literal["mse", "l1", "mse+ssim"]

#: weight of ``range² · (1 - SSIM)`` in the ``mse+ssim`` loss
SSIM_WEIGHT = 0.1
#: largest tap cache kept in memory when ``cache_taps`` is left to decide (bytes)
CACHE_LIMIT_BYTES = 3 * 2**30


def reconstruction_loss(name: str, data_range: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss(pred, target)`` for ``(B, 1, X, Y, Z)`` float32 tensors.

    * ``mse``: mean squared error (the paper's eq. 1);
    * ``l1``: mean absolute error;
    * ``mse+ssim``: ``MSE + SSIM_WEIGHT · data_range² · (1 − SSIM)`` with MONAI's windowed
      Gaussian SSIM (7³ window, sigma 1.5), ``data_range`` = the attack set's intensity range.
    """
    if name == "mse":
        return F.mse_loss
    if name == "l1":
        return F.l1_loss
    if name == "mse+ssim":
        ssim = SSIMLoss(spatial_dims=3, data_range=float(data_range), win_size=7)
        w = SSIM_WEIGHT * float(data_range) ** 2

        def loss(pred: Tensor, target: Tensor) -> Tensor:
            return F.mse_loss(pred, target) + w * ssim(pred, target)

        return loss
    raise ConfigError(f"attack.loss: unknown loss '{name}' (choose from mse, l1, mse+ssim)")


def _compact(t: Tensor) -> Tensor:
    """Store pooling indices as int32 when they fit (half the memory)."""
    if t.dtype == torch.int64 and t.numel() and int(t.max()) < 2**31 - 1:
        return t.to(torch.int32)
    return t


@torch.no_grad()
def compute_taps(tapper: Tapper, images: Tensor, device: torch.device, chunk: int = 2) -> list[Tensor]:
    """Tap every image once: ``images`` ``(N, 1, X, Y, Z)`` -> one CPU tensor ``(N, ...)``
    per tapped output (indices stored as int32 when they fit)."""
    parts: list[list[Tensor]] | None = None
    for start in range(0, images.shape[0], chunk):
        taps = tapper(images[start : start + chunk].to(device))
        taps = [_compact(t).cpu() for t in taps]
        if parts is None:
            parts = [[] for _ in taps]
        for store, t in zip(parts, taps):
            store.append(t)
    assert parts is not None
    return [torch.cat(p, dim=0) for p in parts]


def _tap_bytes_per_sample(tapper: Tapper, sample: Tensor, device: torch.device) -> int:
    taps = tapper(sample.to(device))
    return sum(_compact(t).element_size() * t[0].numel() for t in taps)


def train_inversion_decoder(
    tapper: Tapper,
    decoder: InversionDecoder,
    attack_images: Sequence[np.ndarray],
    config: TrainConfig,
    device: str | torch.device = "auto",
    loss: LossName = "mse",
    checkpoint_stem: str | Path | None = None,
    curve_path: str | Path | None = None,
    progress: bool = True,
    on_step: OnStep | None = None,
    should_stop: ShouldStop | None = None,
    cache_taps: bool | None = None,
    description: str | None = None,
    convergence_path: str | Path | None = None,
    record_info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train ``decoder`` to invert ``tapper`` on the attacker's images only, to a
    validation plateau judged on a held-out part of those same attack images.

    Parameters
    ----------
    tapper
        Frozen victim + threat model (:func:`~napari_invert.attack.make_tapper` or
        :class:`~napari_invert.attack.HookTapper`); moved to ``device``.
    decoder
        :class:`InversionDecoder` built for this tapper (trained in place).
    attack_images
        The attacker's ``N`` float32 volumes ``(X, Y, Z)`` (one shared shape, normalised
        like the victim's training data). These are the ONLY images used.
    config
        Steps (the cap), batch size, lr and schedule, seed, validation and plateau
        settings. A ``validation_fraction`` of the attack images is held out (never
        trained on) and scored by MSE of the reconstruction every ``validate_every``
        steps; the best decoder is kept; the baseline is the MSE of the mean of the
        training part (the attacker's prior). ``augment`` applies flips along
        ``flip_axes`` and intensity jitter to the input image, which is then also the
        target (taps are recomputed every step).
    loss
        ``mse`` (paper), ``l1`` or ``mse+ssim`` (see :func:`reconstruction_loss`).
    cache_taps
        Tap every attack image once and reuse the tensors (the encoder is frozen, so this
        is exact and much faster). ``None``: cache when ``augment`` is off and the cache
        fits in :data:`CACHE_LIMIT_BYTES`. Caching with ``augment`` on is an error.
    description
        Progress-bar label (e.g. ``"fold 0 unet bottleneck decoder"``).
    checkpoint_stem, curve_path, progress, on_step, should_stop, convergence_path, record_info
        As for :func:`~napari_invert.models.train_segmenter` (resume, CSV, tqdm, cancel,
        convergence record).

    Returns
    -------
    Curve rows ``{"step", "loss", "seconds", "batch"}``; ``batch`` holds the indices into
    ``attack_images`` used at that step (never a held-out one).
    """
    device = resolve_device(device)
    configure_backends(device)
    x_all = stack_images(attack_images, "attack_images")
    if tuple(x_all.shape[2:]) != decoder.output_size:
        raise ValueError(
            f"attack images are {tuple(x_all.shape[2:])} but the decoder reconstructs {decoder.output_size}"
        )
    if cache_taps and config.augment:
        raise ConfigError("cache_taps=True cannot be combined with augment=True (taps change every step)")
    tapper.to(device)
    decoder.to(device)
    data_range = float(x_all.max() - x_all.min()) or 1.0
    loss_fn = reconstruction_loss(loss, data_range)
    if cache_taps is None:
        cache_taps = (not config.augment) and (
            _tap_bytes_per_sample(tapper, x_all[:1], device) * x_all.shape[0] <= CACHE_LIMIT_BYTES
        )
    non_blocking = device.type == "cuda"
    n_samples = x_all.shape[0]
    split = split_validation(n_samples, config)
    data: dict[str, Any] = {}  # staged lazily: a finished run returns without tapping anything

    def staged() -> tuple[Tensor, list[Tensor] | None]:
        if not data:
            cache = (
                compute_taps(tapper, x_all, device, chunk=max(1, config.batch_size)) if cache_taps else None
            )
            moved = stage_on_device([x_all, *(cache or [])], device)
            data["x"], data["cache"] = moved[0], (moved[1:] if cache is not None else None)
        return data["x"], data["cache"]

    def compute_loss(batch: list[int], rng: np.random.Generator) -> Tensor:
        images, cache = staged()
        idx = torch.as_tensor(batch)
        x = images[idx].to(device, non_blocking=non_blocking)
        if cache is not None:
            taps = [c[idx].to(device, non_blocking=non_blocking) for c in cache]
        else:
            if config.augment:
                x, _ = augment_batch(x, None, config, rng)
            taps = tapper(x)
        with autocast(device):
            pred = decoder(taps)
        return loss_fn(pred.float(), x)

    validation = None
    if split.validation:
        val_x = x_all[split.validation]

        def score() -> float:
            total = 0.0
            for i in range(val_x.shape[0]):
                x = val_x[i : i + 1].to(device)
                with autocast(device):
                    pred = decoder(tapper(x))
                total += float(F.mse_loss(pred.float(), x))
            return total / val_x.shape[0]

        prior = x_all[split.train].mean(dim=0, keepdim=True)
        baseline = float(((val_x - prior) ** 2).mean(dim=(1, 2, 3, 4)).mean())
        validation = Validation(
            score=score,
            metric="mse",
            higher_is_better=False,
            baseline=baseline,
            baseline_name="mean image of the training part (the attacker's prior)",
            relative_delta=True,
        )
    info = {
        "network": "decoder",
        "loss": loss,
        "validation_source": split.source,
        "validation_note": split.note,
        "trained_on": split.train,
        "validated_on": split.validation,
        **(record_info or {}),
    }
    return run_training_loop(
        module=decoder,
        optimizer=torch.optim.Adam(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay),
        n_samples=n_samples,
        compute_loss=compute_loss,
        config=config,
        device=device,
        module_meta={"kind": "inversion_decoder", "decoder": decoder.spec(), "loss": loss},
        checkpoint_stem=checkpoint_stem,
        curve_path=curve_path,
        progress=progress,
        on_step=on_step,
        should_stop=should_stop,
        description=description or "inversion decoder",
        train_indices=split.train,
        validation=validation,
        convergence_path=convergence_path,
        record_info=info,
    )


@torch.no_grad()
def reconstruct(
    tapper: Tapper,
    decoder: InversionDecoder,
    images: Sequence[np.ndarray],
    device: str | torch.device = "auto",
    batch_size: int = 1,
) -> list[np.ndarray]:
    """Attack: reconstruct each image ``(X, Y, Z)`` from what the tapper reveals about it.

    Returns one float32 ``(X, Y, Z)`` array per image (intensity units of the decoder's
    training data). The decoder runs in eval mode; nothing is trained.
    """
    device = resolve_device(device)
    tapper.to(device)
    decoder.to(device)
    decoder.eval()
    if len(images) == 0:
        return []
    x_all = stack_images(images, "images")
    out: list[np.ndarray] = []
    for start in range(0, x_all.shape[0], batch_size):
        taps = tapper(x_all[start : start + batch_size].to(device))
        with autocast(device):
            pred = decoder(taps)
        out.extend(p[0].float().cpu().numpy().astype(np.float32, copy=False) for p in pred)
    return out
