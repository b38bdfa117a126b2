"""Training-time augmentation, drawn from the per-step generators of the training loop.

* :func:`augment_batch`: what ``augment: true`` does to a training batch, in one fixed
  order (flips, affine, intensity) for the victims, the defended victims and the decoders.
* :func:`augment_intensity`: contrast, brightness and noise jitter per volume.
* :func:`random_flips`: flips along chosen axes, applied to several tensors together
  (segmentation: image AND labels; decoders: input and target are the same image).
* :func:`random_affine`: a small random rotation, scaling and shift per volume, the same
  for the image and its labels (one ``grid_sample`` per batch). With a handful of
  training subjects it is what keeps a victim from memorising them (BENCHMARKS.md,
  "Spatial augmentation").

Flips are off by default (``TrainConfig.flip_axes = []``): after RAS reorientation a flip
along y or z gives anatomy that never occurs, and an x (left/right) flip would turn
hemisphere-specific labels (LPBA40's odd/even structures) into wrongly sided ones unless
the label pairs are swapped too. Use them for cohorts with side-free labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from napari_invert.config import TrainConfig


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


def affine_matrices(
    rng: np.random.Generator, n: int, rotate_deg: float, scale_fraction: float, shift_voxels: float
) -> np.ndarray:
    """``n`` random ``4 x 4`` voxel-space matrices (float64): rotation ``R_z R_y R_x``
    with each angle ~ U(-rotate_deg, rotate_deg) degrees, per-axis scale ~ U(1 - s, 1 + s)
    and shift ~ U(-shift_voxels, shift_voxels) voxels per axis, about the volume centre.

    The draws are made in a fixed order (angles, scales, shifts) so that a seeded
    ``rng`` gives the same matrices every time.
    """
    angles = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, (n, 3)))
    scales = rng.uniform(1.0 - scale_fraction, 1.0 + scale_fraction, (n, 3))
    shifts = rng.uniform(-shift_voxels, shift_voxels, (n, 3))
    out = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        rot = np.eye(3)
        for axis, angle in enumerate(angles[i]):
            c, s = math.cos(angle), math.sin(angle)
            a, b = [k for k in range(3) if k != axis]
            r = np.eye(3)
            r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
            rot = r @ rot
        out[i, :3, :3] = rot @ np.diag(scales[i])
        out[i, :3, 3] = shifts[i]
    return out


def random_affine(
    image: Tensor,
    labels: Tensor | None,
    rng: np.random.Generator,
    rotate_deg: float,
    scale_fraction: float,
    shift_voxels: float,
) -> tuple[Tensor, Tensor | None]:
    """Resample every sample of the batch through its own random affine (see
    :func:`affine_matrices`): ``image`` ``(B, C, X, Y, Z)`` float with linear interpolation,
    ``labels`` ``(B, 1, X, Y, Z)`` integer class indices (or ``None``) with nearest
    neighbour, so no new label values appear. Voxels pulled from outside the volume
    become 0 in both (background after the preprocessing's normalisation).

    The matrix *pulls*: output voxel ``v`` shows input voxel ``A (v - c) + c + t`` (``c``
    the volume centre), so a shift ``t`` moves the content by ``-t`` voxels.

    All three ranges 0: the inputs are returned unchanged and ``rng`` is not drawn from.
    Pitfalls: with a non-zero range this always resamples, so even a near-identity draw
    smooths the image slightly (linear interpolation). MONAI's ``AffineTransform`` is not
    used: given voxel-space matrices, its shifts came out scaled by ``(n - 1) / n`` or
    ``n / (n - 1)`` (by ``align_corners``; measured with MONAI 1.x). The convention here is
    pinned by a known-answer test that resamples coordinate images
    (``tests/test_augment.py``).
    """
    if rotate_deg == 0 and scale_fraction == 0 and shift_voxels == 0:
        return image, labels
    matrices = affine_matrices(rng, image.shape[0], rotate_deg, scale_fraction, shift_voxels)
    # grid_sample's [-1, 1] spans voxel 0 .. n-1 (align_corners): half a side, in voxels
    half = np.maximum(np.array(image.shape[2:], dtype=np.float64) - 1.0, 1.0) / 2.0
    to_unit, to_voxel = np.diag(1.0 / half), np.diag(half)
    reverse = np.eye(3)[::-1]  # grid_sample's coordinates are (z, y, x) of a (X, Y, Z) volume
    theta = np.empty((image.shape[0], 3, 4))
    for i, m in enumerate(matrices):
        theta[i, :, :3] = reverse @ to_unit @ m[:3, :3] @ to_voxel @ reverse
        theta[i, :, 3] = reverse @ to_unit @ m[:3, 3]
    grid = F.affine_grid(
        torch.as_tensor(theta, dtype=torch.float32, device=image.device),
        list(image.shape),
        align_corners=True,
    )
    out_image = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if labels is None:
        return out_image.to(image.dtype), None
    out_labels = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return out_image.to(image.dtype), out_labels.round().to(labels.dtype)


def augment_batch(
    image: Tensor, labels: Tensor | None, config: TrainConfig, rng: np.random.Generator
) -> tuple[Tensor, Tensor | None]:
    """Apply ``config``'s augmentation to a batch: flips along ``flip_axes``, then the
    random affine (``rotate_deg``, ``scale_fraction``, ``shift_voxels``), then intensity
    jitter (image only). ``labels`` (or ``None`` for a decoder, whose target is the
    image) get the same geometry. Every trainer calls this, so a step's draws from
    ``rng`` are the same whichever trainer runs it; the caller checks ``config.augment``.
    """
    if labels is None:
        (image,) = random_flips([image], config.flip_axes, rng)
    else:
        image, labels = random_flips([image, labels], config.flip_axes, rng)
    image, labels = random_affine(
        image, labels, rng, config.rotate_deg, config.scale_fraction, config.shift_voxels
    )
    return augment_intensity(image, rng), labels
