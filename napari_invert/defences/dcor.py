"""Distance correlation (NoPeek) between a volume and its exposed features.

Distance correlation (Székely et al. 2007) of paired samples ``x_i`` (``n x p``) and
``z_i`` (``n x q``): with double-centred Euclidean distance matrices ``A`` and ``B``,
``dCov² = mean(A·B)`` and ``dCor² = dCov²(x, z) / sqrt(dCov²(x, x) · dCov²(z, z))``,
in ``[0, 1]``; 0 for independent samples (as n grows), 1 when ``z`` is a similarity
transform of ``x`` (e.g. ``z = x``). NoPeek (Vepakomma et al. 2020) adds ``w · dCor`` to
the training loss so the exposed features carry less about the raw input.

**Small 3D batches.** NoPeek computes dCor *across the samples of a mini-batch*; a 3D
segmenter is trained with batches of 1-2 volumes, where that statistic is meaningless
(with ``n = 2`` every pair of samples has dCor 1). Here the samples are *positions within
one volume*: a feature tensor at pooling factor ``s`` (``s = 2**level``) is paired, at each
of ``n`` randomly drawn positions of its grid, with the ``s³`` input voxels of the patch it
sits on (its receptive-field centre). dCor over these ``n`` pairs measures how much the
features reveal the local image content, which is what an inversion decoder exploits; it is
computed per volume and per exposed tensor and averaged, so it does not depend on the batch
size at all. ``n`` (``positions``) trades penalty noise against an ``n²`` cost.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _centred_distances(x: Tensor) -> Tensor:
    d = torch.cdist(x, x)
    return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, z: Tensor, eps: float = 1e-12) -> Tensor:
    """Sample distance correlation of ``x`` ``(n, p)`` and ``z`` ``(n, q)`` (float, >= 2 rows).

    Returns a scalar tensor in ``[0, 1]`` (differentiable; the V-statistic of Székely et al.).
    """
    if x.ndim != 2 or z.ndim != 2 or x.shape[0] != z.shape[0]:
        raise ValueError(
            f"distance_correlation: need (n, p) and (n, q), got {tuple(x.shape)}, {tuple(z.shape)}"
        )
    if x.shape[0] < 2:
        raise ValueError("distance_correlation: need at least 2 samples")
    a = _centred_distances(x.float())
    b = _centred_distances(z.float())
    dcov_xz = (a * b).mean()
    dvar_x = (a * a).mean()
    dvar_z = (b * b).mean()
    denom = torch.sqrt(dvar_x * dvar_z)
    if float(denom.detach()) <= eps:
        return torch.zeros((), dtype=torch.float32, device=x.device)
    # clamp away from 0: sqrt has an infinite slope there (the penalty is differentiated)
    return torch.sqrt(torch.clamp(dcov_xz / denom, min=1e-10))


def patch_pairs(
    image: Tensor, feature: Tensor, positions: int, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """Paired samples within ONE volume: input patches and the features on them.

    ``image`` ``(C, X, Y, Z)``, ``feature`` ``(K, X/s, Y/s, Z/s)`` with an integer factor
    ``s``; returns ``(n, C·s³)`` patches and ``(n, K)`` feature vectors at ``n =
    min(positions, grid size)`` positions drawn without replacement from ``rng``.
    """
    c = image.shape[0]
    grid = tuple(int(v) for v in feature.shape[1:])
    s = image.shape[1] // grid[0]
    if s < 1 or any(image.shape[1 + i] != grid[i] * s for i in range(3)):
        raise ValueError(f"feature grid {grid} does not tile the image {tuple(image.shape[1:])}")
    total = grid[0] * grid[1] * grid[2]
    n = min(int(positions), total)
    idx = torch.as_tensor(rng.choice(total, size=n, replace=False), device=image.device)
    if s == 1:
        patches = image.reshape(c, -1)[:, idx].T
    else:
        unf = _unshuffle3d(image, s)  # (C*s^3, X/s, Y/s, Z/s)
        patches = unf.reshape(c * s**3, -1)[:, idx].T
    feats = feature.reshape(feature.shape[0], -1)[:, idx].T
    return patches, feats


def _unshuffle3d(x: Tensor, s: int) -> Tensor:
    """``(C, X, Y, Z)`` -> ``(C·s³, X/s, Y/s, Z/s)``: each output position holds its s³ patch."""
    c, X, Y, Z = x.shape
    v = x.reshape(c, X // s, s, Y // s, s, Z // s, s)
    return v.permute(0, 2, 4, 6, 1, 3, 5).reshape(c * s**3, X // s, Y // s, Z // s)


def nopeek_penalty(
    images: Tensor, features: list[Tensor], positions: int, rng: np.random.Generator
) -> Tensor:
    """Mean dCor between input patches and each exposed float tensor, within each volume.

    ``images`` ``(B, C, X, Y, Z)``; ``features`` ``(B, K_i, X/s_i, ...)`` float tensors.
    Returns a scalar in ``[0, 1]`` (the average over volumes and tensors).
    """
    values = []
    for b in range(images.shape[0]):
        for f in features:
            p, z = patch_pairs(images[b], f[b], positions, rng)
            if p.shape[0] >= 2:
                values.append(distance_correlation(p, z))
    if not values:
        return images.new_zeros(())
    return torch.stack(values).mean()
