"""Training-time augmentation, drawn from the per-step generators of the training loop.

* :func:`augment_intensity`: contrast, brightness and noise jitter per volume.
* :func:`random_flips`: flips along chosen axes, applied to several tensors together
  (segmentation: image AND labels; decoders: input and target are the same image).

Flips are off by default (``TrainConfig.flip_axes = []``): after RAS reorientation a flip
along y or z gives anatomy that never occurs, and an x (left/right) flip would turn
hemisphere-specific labels (LPBA40's odd/even structures) into wrongly sided ones unless
the label pairs are swapped too. Use them for cohorts with side-free labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def augment_intensity(x: Tensor, rng: np.random.Generator) -> Tensor:
    """Random intensity jitter, per volume: contrast x U(0.9, 1.1), brightness shift
    U(-0.1, 0.1) x std, Gaussian noise with sigma U(0, 0.03) x std.

    ``x``: ``(B, C, X, Y, Z)`` float. Geometry is not changed (see :func:`random_flips`).
    Noise is drawn from torch's (per-step seeded) RNG on ``x``'s device.
    """
    b = x.shape[0]
    dims = (1, 2, 3, 4)
    std = x.float().std(dim=dims, keepdim=True).clamp_min(1e-6)
    shape = (b, 1, 1, 1, 1)
    scale = torch.as_tensor(rng.uniform(0.9, 1.1, b), dtype=x.dtype, device=x.device).view(shape)
    shift = torch.as_tensor(rng.uniform(-0.1, 0.1, b), dtype=x.dtype, device=x.device).view(shape)
    sigma = torch.as_tensor(rng.uniform(0.0, 0.03, b), dtype=x.dtype, device=x.device).view(shape)
    noise = torch.randn(x.shape, dtype=x.dtype, device=x.device)
    return x * scale + shift * std + noise * sigma * std


def random_flips(tensors: Sequence[Tensor], axes: Sequence[int], rng: np.random.Generator) -> list[Tensor]:
    """Flip every sample of the batch along each of ``axes`` (0, 1, 2 = x, y, z) with
    probability 1/2, the SAME flips for every tensor in ``tensors`` (all ``(B, C, X, Y,
    Z)``, one batch size). One draw per (sample, axis) from ``rng``; no axes: unchanged."""
    out = list(tensors)
    if not axes or not out:
        return out
    b = out[0].shape[0]
    draws = rng.random((b, len(axes))) < 0.5
    for i in range(b):
        dims = [2 + int(a) for a, flip in zip(axes, draws[i]) if flip]
        if dims:
            for k, t in enumerate(out):
                t = t.clone() if t is tensors[k] else t
                t[i] = torch.flip(t[i], dims=[d - 1 for d in dims])
                out[k] = t
    return out
