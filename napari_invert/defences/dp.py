"""DP-SGD for the victim segmenter with Opacus (optional extra: ``pip install 'napari-invert[dp]'``).

What Opacus supports here (checked with Opacus 1.6):

* **Per-sample gradients for Conv3d**: yes, Opacus has a Conv3d grad sampler; the U-Net's
  and decoders' ``ConvTranspose3d`` (up-sampling) have none, and Opacus computes them with
  its functorch fallback (slower, exact).
* **Normalisation**: ``InstanceNorm3d`` (``segmenter.norm: instance``, the default) and no
  normalisation (``none``) are accepted; ``BatchNorm3d`` (``norm: batch``) is refused by
  Opacus because it mixes the samples of a batch, and :func:`check_dp_compatible` says so.
* **Loss**: the default training loss computes Dice over the whole batch, which couples
  the samples; DP-SGD needs a loss that is a mean of per-sample terms, so here the Dice +
  cross-entropy is computed per volume and averaged.
* **Accounting**: Opacus' RDP accountant with sample rate ``q = batch_size / N`` and
  ``steps`` steps gives epsilon at the configured delta. Opacus' analysis assumes Poisson
  sampling; the training loop draws fixed-size batches from per-epoch permutations (as
  Opacus itself does with ``poisson_sampling=False``), so the reported epsilon is the
  customary approximation, not a formal guarantee for this sampler.
* Autocast is off (fp32) during DP training.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from napari_invert.defences.spec import DefenceSpec
from napari_invert.errors import ConfigError
from napari_invert.models.base import Segmenter

if TYPE_CHECKING:
    from napari_invert.defences.training import VictimTraining


def _require_opacus() -> Any:
    try:
        import opacus
    except ImportError:
        raise ConfigError(
            "defences: dp_sgd needs Opacus; install it with pip install 'napari-invert[dp]'"
        ) from None
    return opacus


def check_dp_compatible(model: Segmenter) -> None:
    """Raise :class:`ConfigError` naming the problem when Opacus cannot train ``model``."""
    _require_opacus()
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        norm = getattr(getattr(model, "config", None), "norm", "?")
        hint = (
            " (segmenter.norm: batch uses BatchNorm3d; set norm: instance or none for dp_sgd)"
            if norm == "batch"
            else ""
        )
        raise ConfigError(f"defences: dp_sgd cannot train this {model.arch}: {errors[0]}{hint}")


def dp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` DP-SGD steps at ``delta`` (Opacus RDP accountant)."""
    _require_opacus()
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(acc.get_epsilon(delta=float(delta)))


def train_dp_sgd(model: Segmenter, spec: DefenceSpec, run: VictimTraining) -> dict[str, Any]:
    """Train ``model`` with DP-SGD (Adam on clipped, noised per-sample gradients).

    ``spec.strength`` is the noise multiplier; ``spec.params`` gives ``max_grad_norm`` and
    ``delta``. Returns ``{"epsilon", "delta", "noise_multiplier", "max_grad_norm",
    "sample_rate", "steps", "accountant"}``.
    """
    check_dp_compatible(model)
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer

    config = run.config
    n = len(run.images)
    if config.batch_size > n:
        raise ConfigError(
            f"defences: dp_sgd batch_size {config.batch_size} exceeds the {n} training subjects"
        )
    max_norm = float(spec.params.get("max_grad_norm", 1.0))
    delta = float(spec.params.get("delta", 1e-5))
    model.to(run.device)
    gsm = GradSampleModule(model)
    optimizer = DPOptimizer(
        run.adam(model.parameters()),
        noise_multiplier=float(spec.strength),
        max_grad_norm=max_norm,
        expected_batch_size=config.batch_size,
        loss_reduction="mean",
    )
    seg_loss = run.segmentation_loss()

    def loss_dp(x: Tensor, y: Tensor, rng: np.random.Generator) -> Tensor:
        logits = gsm(x)
        per_sample = [seg_loss(logits[i : i + 1].float(), y[i : i + 1]) for i in range(x.shape[0])]
        return torch.stack(per_sample).mean()

    meta = {**run.meta, "dp": {"max_grad_norm": max_norm, "delta": delta}}
    try:
        run.loop(model, model, optimizer, loss_dp, meta=meta)
    finally:
        gsm._close()  # remove Opacus' hooks; the weights stay in ``model``
    q = config.batch_size / n
    return {
        "epsilon": dp_epsilon(spec.strength, q, config.steps, delta),
        "delta": delta,
        "noise_multiplier": float(spec.strength),
        "max_grad_norm": max_norm,
        "sample_rate": q,
        "steps": config.steps,
        "accountant": "Opacus RDP (sample rate = batch_size / N; fixed-size shuffled batches)",
    }
