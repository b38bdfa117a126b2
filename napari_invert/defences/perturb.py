"""Feature-side defences at inference: noise and quantisation of every exposed tensor.

:class:`DefendedSegmenter` wraps a trained :class:`~napari_invert.models.Segmenter` so that
its :meth:`~DefendedSegmenter.encode` returns *perturbed* features. Everything downstream
sees the same perturbed tensors: the victim's own decoder (so its Dice, the utility, pays
for the defence) and the attacker's tapper (:class:`~napari_invert.defences.ExposedTapper`).

Only floating-point tensors (bottleneck, U-Net skips) are perturbed. SegNet's pooling
indices are integer positions: noise or quantisation cannot be applied to them, so they
stay exposed unchanged (combine with ``expose_less`` to withhold them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from napari_invert.models.base import EncoderFeatures, Segmenter

_DIMS = (1, 2, 3, 4)


def _float_tensors(f: EncoderFeatures) -> list[Tensor]:
    return [f.bottleneck, *f.skips]


def _map_floats(f: EncoderFeatures, fn) -> EncoderFeatures:
    return replace(f, bottleneck=fn(f.bottleneck), skips=[fn(s) for s in f.skips])


class FeatureNoise(nn.Module):
    """Add ``N(0, (sigma * sd)^2)`` to every exposed float tensor, ``sd`` being that tensor's
    standard deviation per volume (over channels and voxels), so ``sigma`` is relative.

    In training mode the noise comes from torch's global RNG (seeded per step by
    :func:`~napari_invert.models.run_training_loop`); in eval mode from a private generator
    seeded with ``seed`` (reproducible attacks). ``sigma = 0`` is the identity.
    """

    def __init__(self, sigma: float, seed: int = 0) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.training:
            return None
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def perturb(self, t: Tensor) -> Tensor:
        """``t`` ``(B, C, X, Y, Z)`` float -> same shape with relative Gaussian noise."""
        if self.sigma == 0:
            return t
        sd = t.detach().float().std(dim=_DIMS, keepdim=True)
        noise = torch.randn(
            t.shape, generator=self._generator(t.device), device=t.device, dtype=torch.float32
        )
        return t + (noise * (self.sigma * sd)).to(t.dtype)

    def forward(self, f: EncoderFeatures) -> EncoderFeatures:
        return _map_floats(f, self.perturb)

    def describe(self) -> dict[str, Any]:
        return {"kind": "noise", "sigma": self.sigma, "seed": self.seed}


class FeatureQuantiser(nn.Module):
    """Quantise every exposed float tensor, per volume, to ``2**bits`` evenly spaced levels
    between its minimum and maximum (so at most ``2**bits`` distinct values).

    The gradient passes straight through (``t + (q - t).detach()``) so a victim can be
    trained through the quantiser.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 16:
            raise ValueError(f"quantisation bits must lie in 1..16, got {bits}")
        self.bits = int(bits)

    def quantise(self, t: Tensor) -> Tensor:
        """``t`` ``(B, C, X, Y, Z)`` float -> quantised, same shape and dtype."""
        x = t.float()
        lo = x.detach().amin(dim=_DIMS, keepdim=True)
        hi = x.detach().amax(dim=_DIMS, keepdim=True)
        steps = 2**self.bits - 1
        scale = (hi - lo).clamp_min(1e-12) / steps
        q = torch.round((x - lo) / scale).clamp(0, steps) * scale + lo
        # straight-through: the value is exactly q, the gradient that of the identity
        return (q.detach() + (x - x.detach())).to(t.dtype)

    def forward(self, f: EncoderFeatures) -> EncoderFeatures:
        return _map_floats(f, self.quantise)

    def describe(self) -> dict[str, Any]:
        return {"kind": "quantise", "bits": self.bits}


class DefendedSegmenter(Segmenter):
    """A segmenter whose exposed features pass through ``perturbation`` (noise, quantiser).

    ``encode(x) = perturbation(inner.encode(x))``; ``decode`` is the inner decoder; so
    ``forward`` (and :func:`~napari_invert.models.predict`) segment from the perturbed
    features. ``arch``, ``levels``, ``channels`` are the inner network's.
    """

    def __init__(self, inner: Segmenter, perturbation: nn.Module) -> None:
        super().__init__(inner.config, inner.n_classes, inner.in_channels)
        self.arch = inner.arch
        self.inner = inner
        self.perturbation = perturbation
        self.drop_levels = int(getattr(inner, "drop_levels", 0))

    def encode(self, x: Tensor) -> EncoderFeatures:
        return self.perturbation(self.inner.encode(x))

    def decode(self, features: EncoderFeatures) -> Tensor:
        return self.inner.decode(features)

    def spec(self) -> dict[str, Any]:
        return {**self.inner.spec(), "perturbation": self.perturbation.describe()}


def exposed_float_tensors(features: EncoderFeatures) -> list[Tensor]:
    """The floating-point tensors an encoder exposes (bottleneck first, then the skips)."""
    return _float_tensors(features)
