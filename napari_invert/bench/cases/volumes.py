"""Volumes the similarity benchmarks run on: synthetic smooth ones or real LPBA40 images.

Both sources return the same :class:`VolumeSet`: ``M`` "originals" (the candidates, with
brain masks) and ``M`` "reconstructions" (each a degraded copy of its original, so the
true pair is the most similar and every pair has realistic, non-trivial SSIM values).
The benchmarks use the first ``N`` reconstructions as rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VolumeSet", "lpba40_images", "lpba40_volumes", "synthetic_volumes"]


@dataclass
class VolumeSet:
    """Originals ``(M, X, Y, Z)`` float32, masks ``(M, X, Y, Z)`` bool, reconstructions
    ``(M, X, Y, Z)`` float32, one common ``data_range`` and where they came from."""

    originals: np.ndarray
    masks: np.ndarray
    recons: np.ndarray
    data_range: float
    source: str
    note: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.originals.shape[1:])  # type: ignore[return-value]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], coarse: int) -> np.ndarray:
    """Smooth random field in about ``[-1, 1]``: coarse Gaussian noise, trilinear upsampling."""
    import torch
    import torch.nn.functional as F

    cshape = tuple(max(2, s // coarse) for s in shape)
    noise = torch.from_numpy(rng.standard_normal(cshape).astype(np.float32))[None, None]
    field = F.interpolate(noise, size=shape, mode="trilinear", align_corners=True)[0, 0]
    return (field / 2.0).numpy()


def _ellipsoid(shape: tuple[int, int, int], fill: float = 0.8) -> np.ndarray:
    """Centred ellipsoid filling ``fill`` of each axis (a stand-in brain mask)."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) / fill for n in shape]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij", sparse=True)
    return (xx**2 + yy**2 + zz**2) <= 1.0


def synthetic_volumes(shape: tuple[int, int, int], n: int, seed: int = 0) -> VolumeSet:
    """``n`` synthetic brain-like volumes in ``[0, 1]`` (smooth texture inside an ellipsoid).

    Original ``j`` = mask x clip(0.5 + 0.3 smooth field + 0.05 fine noise); its
    reconstruction = mask x (0.8 original + 0.2 another smooth field), i.e. blurrier and
    biased like a real inversion. ``data_range`` = 1.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    mask = _ellipsoid(shape)
    originals = np.empty((n, *shape), dtype=np.float32)
    recons = np.empty((n, *shape), dtype=np.float32)
    for j in range(n):
        base = 0.5 + 0.3 * _smooth_field(rng, shape, 4) + 0.05 * rng.standard_normal(shape, dtype=np.float32)
        originals[j] = np.clip(base, 0.0, 1.0) * mask
        other = 0.5 + 0.3 * _smooth_field(rng, shape, 8)
        recons[j] = np.clip(0.8 * originals[j] + 0.2 * other, 0.0, 1.0) * mask
    masks = np.broadcast_to(mask, (n, *shape)).copy()
    return VolumeSet(originals, masks, recons, 1.0, "synthetic", "smooth random texture in an ellipsoid")


def lpba40_images(root: Path | None = None) -> list[Path]:
    """The LPBA40 image files (``<data>/lpba40/images/*.nii.gz``), sorted; empty if absent."""
    if root is None:
        from napari_invert.config import default_data_root

        root = default_data_root() / "lpba40"
    folder = Path(root) / "images"
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.nii.gz"))


def lpba40_volumes(n: int, seed: int = 0, root: Path | None = None) -> VolumeSet | None:
    """The first ``n`` LPBA40 images at their native 160x192x160 (1 mm), or ``None``.

    Intensities as stored (``get_fdata``: each subject in ``[0, 1]``); masks ``image > 0``.
    Reconstruction ``i`` = mask x (0.85 image ``i`` + 0.15 image ``i+1`` + Gaussian noise
    sigma 0.02), clipped to ``[0, 1]``. ``data_range`` = range of the originals.
    """
    import nibabel as nib

    files = lpba40_images(root)
    if len(files) < n:
        return None
    originals = np.stack([np.asarray(nib.load(f).get_fdata(dtype=np.float32)) for f in files[:n]])
    masks = originals > 0
    rng = np.random.default_rng(seed)
    recons = np.empty_like(originals)
    for i in range(n):
        mix = 0.85 * originals[i] + 0.15 * originals[(i + 1) % n]
        mix += rng.standard_normal(mix.shape, dtype=np.float32) * np.float32(0.02)
        recons[i] = np.clip(mix, 0.0, 1.0) * masks[i]
    data_range = float(originals.max() - originals.min()) or 1.0
    return VolumeSet(
        originals, masks, recons, data_range, "lpba40", f"LPBA40 S01..S{n:02d}, native 1 mm grid"
    )
