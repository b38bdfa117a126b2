"""Training a defended victim: one function per training-time defence, one dispatcher.

Every trainer reuses :func:`napari_invert.models.run_training_loop` (deterministic,
resumable, CSV curve, progress, cancellation) with its own ``compute_loss``:

* ``none``, ``expose_less`` and inference-only noise/quantisation: the standard
  :func:`~napari_invert.models.train_segmenter` (``expose_less`` changes the network);
* ``noise`` / ``quantise`` with ``train``: the segmentation loss is computed from the
  *perturbed* features, so the victim learns to segment through its defence;
* ``nopeek``: segmentation loss + ``w · dCor`` (:func:`~napari_invert.defences.dcor.nopeek_penalty`);
* ``adversarial``: a min-max game with an inversion decoder (the adversary) through a
  gradient-reversal layer, both in one checkpoint (:func:`train_adversarial`);
* ``dp_sgd``: Opacus per-sample clipping and noise (:mod:`napari_invert.defences.dp`).

:func:`train_defended_victim` builds the network for a :class:`DefenceSpec`, trains it and
returns the model the world sees (a :class:`DefendedSegmenter` for noise/quantisation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from napari_invert.config import SegmenterConfig, TrainConfig
from napari_invert.defences.dcor import nopeek_penalty
from napari_invert.defences.perturb import (
    DefendedSegmenter,
    FeatureNoise,
    FeatureQuantiser,
    exposed_float_tensors,
)
from napari_invert.defences.spec import DefenceSpec
from napari_invert.device import autocast, configure_backends, resolve_device
from napari_invert.errors import ConfigError
from napari_invert.models.augment import augment_batch
from napari_invert.models.base import EncoderFeatures, Segmenter
from napari_invert.models.factory import build_segmenter
from napari_invert.models.losses import segmentation_loss
from napari_invert.models.segmenter_training import stack_labels, train_segmenter
from napari_invert.models.training import (
    OnStep,
    ShouldStop,
    run_training_loop,
    stack_images,
    stage_on_device,
)

#: loss of a batch: ``(model input x (B,1,X,Y,Z), labels y (B,1,X,Y,Z) int64, rng) -> scalar``
BatchLoss = Callable[[Tensor, Tensor, np.random.Generator], Tensor]


def build_victim(arch: str, config: SegmenterConfig, n_classes: int, spec: DefenceSpec) -> Segmenter:
    """The untrained network for ``spec`` (``expose_less``: without the first ``k`` levels'
    skips / indices). Initialised from torch's global RNG (seed it first)."""
    drop = int(spec.strength) if spec.kind == "expose_less" else 0
    if drop > config.levels:
        raise ConfigError(f"defences: expose_less strength {drop} exceeds segmenter.levels = {config.levels}")
    return build_segmenter(arch, config, n_classes=n_classes, drop_levels=drop)


def perturbation_for(spec: DefenceSpec, seed: int = 0) -> nn.Module | None:
    """The inference-time perturbation of ``spec`` (``None`` for the other defences)."""
    if spec.kind == "noise":
        return FeatureNoise(spec.strength, seed=seed)
    if spec.kind == "quantise":
        return FeatureQuantiser(int(spec.strength))
    return None


@dataclass(frozen=True)
class VictimTraining:
    """What every training-time defence trains on and how, whatever its loss.

    ``images`` / ``labels``: the members' ``(X, Y, Z)`` float32 images and integer label
    maps; ``meta``: the checkpoint's module description; ``description``: progress label.
    The rest is passed on to :func:`run_training_loop` (resume, CSV curve, progress,
    callbacks, cancellation).
    """

    images: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    config: TrainConfig
    device: torch.device
    meta: dict[str, Any]
    description: str
    checkpoint_stem: str | Path | None = None
    curve_path: str | Path | None = None
    progress: bool = True
    on_step: OnStep | None = None
    should_stop: ShouldStop | None = None

    def segmentation_loss(self) -> nn.Module:
        """The victim's segmentation loss chosen by ``config.segmentation_loss`` (Dice + CE or
        Dice + focal): the loss the undefended reference trains with (see
        :func:`train_defended_victim` for the rest of what they share)."""
        return segmentation_loss(config=self.config)

    def adam(self, params: Iterable[nn.Parameter]) -> torch.optim.Adam:
        """Adam over ``params`` with the configured ``lr`` and ``weight_decay``."""
        return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def loop(
        self,
        module: nn.Module,
        model: Segmenter,
        optimizer: torch.optim.Optimizer,
        batch_loss: BatchLoss,
        meta: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """:func:`run_training_loop` of ``module`` (the checkpointed networks; ``model`` is
        the victim among them) over (image, label) batches with ``batch_loss``; ``meta``
        replaces :attr:`meta` in the checkpoint. Returns the curve rows."""
        config, device = self.config, self.device
        x_all = stack_images(self.images, "images")
        y_all = stack_labels(self.labels, model.n_classes, tuple(x_all.shape[2:]))
        model.check_input(x_all[:1])
        module.to(device)
        x_all, y_all = stage_on_device([x_all, y_all], device)

        def compute_loss(batch: list[int], rng: np.random.Generator) -> Tensor:
            idx = torch.as_tensor(batch)
            x = x_all[idx].to(device)
            y = y_all[idx].to(device).long()
            if config.augment:  # the same augmentation, in the same order, as train_segmenter
                x, y = augment_batch(x, y, config, rng)
            return batch_loss(x, y, rng)

        return run_training_loop(
            module=module,
            optimizer=optimizer,
            n_samples=len(self.images),
            compute_loss=compute_loss,
            config=config,
            device=device,
            module_meta=self.meta if meta is None else meta,
            checkpoint_stem=self.checkpoint_stem,
            curve_path=self.curve_path,
            progress=self.progress,
            on_step=self.on_step,
            should_stop=self.should_stop,
            description=self.description,
        )


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: Tensor, weight: float) -> Tensor:
    """Identity forward; the gradient is multiplied by ``-weight`` on the way back."""
    return _GradientReversal.apply(x, float(weight))


def _adversary_inputs(f: EncoderFeatures, weight: float) -> list[Tensor]:
    floats = [reverse_gradient(t, weight) for t in (f.bottleneck, *f.skips)]
    return [*floats, *(f.indices or [])]


def make_adversary(model: Segmenter, sample: Tensor, base_filters: int) -> nn.Module:
    """An :class:`~napari_invert.attack.InversionDecoder` fitted to what ``model`` exposes."""
    from napari_invert.attack.decoder import InversionDecoder, TapInput
    from napari_invert.defences.taps import exposed_names

    with torch.no_grad():
        f = model.encode(sample)
    tensors = [f.bottleneck, *f.skips, *(f.indices or [])]
    inputs = [TapInput.from_tensor(n, t) for n, t in zip(exposed_names(model), tensors)]
    return InversionDecoder(inputs, tuple(sample.shape[2:]), base_filters=base_filters)


def train_defended_victim(
    arch: str,
    segmenter_config: SegmenterConfig,
    n_classes: int,
    spec: DefenceSpec,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: TrainConfig,
    device: str | torch.device = "auto",
    checkpoint_stem: str | Path | None = None,
    curve_path: str | Path | None = None,
    progress: bool = True,
    on_step: OnStep | None = None,
    should_stop: ShouldStop | None = None,
    perturbation_seed: int = 0,
) -> tuple[Segmenter, Segmenter, dict[str, Any]]:
    """Build and train the victim for ``spec`` on ``images``/``labels`` (its members only).

    Returns ``(trained network, deployed network, info)``: the deployed network is a
    :class:`DefendedSegmenter` for noise/quantisation (its encoder output is perturbed),
    else the trained network itself; ``info`` holds e.g. ``epsilon`` and ``delta`` for
    DP-SGD. Weights are initialised from torch's global RNG (seed it first).

    Every defended victim, the undefended reference (``none``) included, trains on *all* of
    ``images`` for exactly ``config.steps`` steps (``validation_fraction`` is set to 0 here):
    the fold's private subjects are then exactly its members for membership inference, and
    each defence gets the same data, steps, loss and augmentation as the reference, so its
    Dice cost is the defence's alone. (A study's own victims hold out a validation part and
    stop on a plateau; their members are the subjects they fitted.)
    """
    config = config.model_copy(update={"validation_fraction": 0.0})
    device = resolve_device(device)
    configure_backends(device)
    model = build_victim(arch, segmenter_config, n_classes, spec)
    perturbation = perturbation_for(spec, perturbation_seed)
    common = {
        "checkpoint_stem": checkpoint_stem,
        "curve_path": curve_path,
        "progress": progress,
        "on_step": on_step,
        "should_stop": should_stop,
    }
    info: dict[str, Any] = {}
    meta = {"kind": "defended_segmenter", "segmenter": model.spec(), "defence": spec.to_dict()}
    run = VictimTraining(images, labels, config, device, meta, f"{arch}@{spec.slug} training", **common)
    seg_loss = run.segmentation_loss()
    trains_through = spec.kind in ("noise", "quantise") and bool(spec.params.get("train", True))

    if spec.kind in ("none", "expose_less") or (perturbation is not None and not trains_through):
        train_segmenter(model, images, labels, config, device, **common)
    elif trains_through:
        assert perturbation is not None
        perturbation.train()

        def loss_through(x: Tensor, y: Tensor, rng: np.random.Generator) -> Tensor:
            with autocast(device):
                logits = model.decode(perturbation(model.encode(x)))
            return seg_loss(logits.float(), y)

        run.loop(model, model, run.adam(model.parameters()), loss_through)
    elif spec.kind == "nopeek":
        positions = int(spec.params.get("positions", 256))

        def loss_nopeek(x: Tensor, y: Tensor, rng: np.random.Generator) -> Tensor:
            with autocast(device):
                f = model.encode(x)
                logits = model.decode(f)
            penalty = nopeek_penalty(x.float(), [t.float() for t in exposed_float_tensors(f)], positions, rng)
            return seg_loss(logits.float(), y) + spec.strength * penalty

        run.loop(model, model, run.adam(model.parameters()), loss_nopeek)
    elif spec.kind == "adversarial":
        info.update(train_adversarial(model, spec, run))
    elif spec.kind == "dp_sgd":
        from napari_invert.defences.dp import train_dp_sgd

        info.update(train_dp_sgd(model, spec, run))
    else:
        raise ConfigError(f"defences: unknown defence kind '{spec.kind}'")
    model.eval()
    deployed: Segmenter = model if perturbation is None else DefendedSegmenter(model, perturbation).eval()
    return model, deployed, info


def train_adversarial(model: Segmenter, spec: DefenceSpec, run: VictimTraining) -> dict[str, Any]:
    """Min-max training against an inversion decoder (the adversary).

    One optimiser step updates both players: the adversary ``D`` minimises
    ``MSE(D(features), x)``; a gradient-reversal layer between the encoder's exposed
    features and ``D`` makes the victim *maximise* it with weight ``w = strength`` while it
    minimises its segmentation loss: the victim's gradient is that of ``seg - w · MSE``.
    Both networks (and Adam's state) live in one checkpoint, so the game resumes exactly.
    The adversary is discarded afterwards: the evaluation's attacker is retrained from
    scratch against the finished victim.
    """
    device = run.device
    sample = stack_images(run.images[:1], "images").to(device)
    model.to(device)
    adversary = make_adversary(model, sample, int(spec.params.get("adversary_base_filters", 8)))
    pair = nn.ModuleDict({"victim": model, "adversary": adversary})
    seg_loss = run.segmentation_loss()
    weight = float(spec.strength)

    def loss_adv(x: Tensor, y: Tensor, rng: np.random.Generator) -> Tensor:
        with autocast(device):
            f = model.encode(x)
            logits = model.decode(f)
            recon = adversary(_adversary_inputs(f, weight))
        return seg_loss(logits.float(), y) + torch.nn.functional.mse_loss(recon.float(), x)

    opt = run.adam(pair.parameters())
    rows = run.loop(pair, model, opt, loss_adv, meta={**run.meta, "adversary": adversary.spec()})
    return {"final_loss_seg_plus_adversary_mse": float(rows[-1]["loss"]) if rows else None}
