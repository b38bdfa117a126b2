"""Pearson correlation of grey levels (the paper's "MCC") and masked image moments.

The paper (Subbanna et al. 2021) calls its first metric the "Matthews correlation
coefficient"; what the authors computed is the Pearson correlation coefficient of the grey
levels of the original and the reconstruction. This module computes exactly that:

.. math::

    r(a, b) = \\frac{\\operatorname{cov}(a, b)}{\\sqrt{\\operatorname{var}(a)\\,\\operatorname{var}(b)}}

over all voxels, or over the voxels of a mask (in this project: the brain mask of the
*original*, i.e. of the candidate a reconstruction is compared with).

Value range ``[-1, 1]``; ``1`` for ``b = s * a + t`` with ``s > 0``. It is invariant to
affine intensity changes, so unlike SSIM it needs no ``data_range``. It is ``NaN`` when
either image is constant inside the mask (zero variance) or the mask is empty.

The private helper :func:`masked_moments_matrix` computes, for every (reconstruction,
original) pair, the means, variances and covariance inside the original's mask with a few
batched matrix products (float64 accumulation); :func:`correlation_matrix` and
:func:`napari_invert.metrics.global_ssim.ssim_global_matrix` are thin formulas on top of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MaskedMoments",
    "correlation_matrix",
    "masked_moments_matrix",
    "pearson_correlation",
    "torch_threads",
]

ArrayStack = np.ndarray | Sequence[np.ndarray]

#: Default number of voxels per chunk in the batched moment computation.
DEFAULT_CHUNK_VOXELS = 1 << 18


# --------------------------------------------------------------------------------------
# shared input helpers (also used by ssim.py)
# --------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; strings are passed to ``torch.device``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def as_volume_list(volumes: ArrayStack, name: str, ndim: int = 3) -> list[np.ndarray]:
    """Turn an ``(N, X, Y, Z)`` array or a sequence of ``(X, Y, Z)`` arrays into a list.

    No data are copied (views of a stacked array are returned). Raises ``ValueError`` if
    the volumes are not ``ndim``-dimensional or do not all share one shape.
    """
    if isinstance(volumes, np.ndarray):
        if volumes.ndim == ndim:
            raise ValueError(
                f"{name}: expected a stack of volumes (N, X, Y, Z), got one volume "
                f"of shape {volumes.shape}; wrap it as {name}[None]"
            )
        if volumes.ndim != ndim + 1:
            raise ValueError(f"{name}: expected shape (N, X, Y, Z), got {volumes.shape}")
        out = list(volumes)
    else:
        out = [np.asarray(v) for v in volumes]
    if not out:
        raise ValueError(f"{name}: no volumes given")
    shape = out[0].shape
    for k, v in enumerate(out):
        if v.ndim != ndim:
            raise ValueError(f"{name}[{k}]: expected a {ndim}D volume, got shape {v.shape}")
        if v.shape != shape:
            raise ValueError(f"{name}[{k}]: shape {v.shape} differs from {name}[0] {shape}")
    return out


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads`` (``None``: leave it alone); restored after.

    On a small, shared CPU one thread is often faster than several: multi-threaded
    kernels slow down badly when other processes compete for the cores.
    """
    if num_threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(max(int(num_threads), 1))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def check_same_shape(a_shape: tuple[int, ...], b_shape: tuple[int, ...], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` if two shapes differ."""
    if tuple(a_shape) != tuple(b_shape):
        raise ValueError(f"{what}: shapes differ ({tuple(a_shape)} vs {tuple(b_shape)})")


# --------------------------------------------------------------------------------------
# single pair
# --------------------------------------------------------------------------------------
def masked_values(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """The voxels of ``a`` and ``b`` inside ``mask`` (all voxels if ``None``) as float64 vectors."""
    if mask is None:
        return a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    mask = np.asarray(mask, dtype=bool)
    check_same_shape(a.shape, mask.shape, f"{what} mask")
    return a[mask].astype(np.float64), b[mask].astype(np.float64)


def pearson_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of the grey levels of two volumes (the paper's "MCC").

    Parameters
    ----------
    a, b
        Volumes of equal shape ``(X, Y, Z)`` (any real dtype; computed in float64).
    mask
        Optional boolean ``(X, Y, Z)``; only its voxels are used. In this project pass
        the brain mask of the *original* image.

    Returns
    -------
    float
        Correlation in ``[-1, 1]``; ``NaN`` if the mask is empty or either image is
        constant inside it.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    check_same_shape(a.shape, b.shape, "pearson_correlation")
    x, y = masked_values(a, b, mask, "pearson_correlation")
    if x.size == 0:
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt(np.dot(x, x) * np.dot(y, y))
    if den == 0 or not np.isfinite(den):
        return float("nan")
    return float(np.clip(np.dot(x, y) / den, -1.0, 1.0))


# --------------------------------------------------------------------------------------
# batched moments
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskedMoments:
    """First and second moments of every (reconstruction i, original j) pair.

    All fields are float64 ``(N, M)`` arrays, taken over the voxels of original ``j``'s
    mask (or the whole volume): ``mean_x`` (reconstruction), ``mean_y`` (original),
    population variances ``var_x``, ``var_y`` (divide by the voxel count ``n``) and the
    population covariance ``cov``. ``n`` is the voxel count per pair (``(N, M)`` int).
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    var_x: np.ndarray
    var_y: np.ndarray
    cov: np.ndarray
    n: np.ndarray


def _global_means(vols: list[np.ndarray]) -> np.ndarray:
    return np.array([float(np.mean(v, dtype=np.float64)) for v in vols], dtype=np.float64)


def masked_moments_matrix(
    recons: ArrayStack,
    originals: ArrayStack,
    masks: ArrayStack | None = None,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_CHUNK_VOXELS,
    num_threads: int | None = None,
) -> MaskedMoments:
    """Means, variances and covariance of all pairs inside each original's mask.

    Computed with batched matrix products over chunks of ``batch_size`` voxels, in
    float64 on ``device`` (no Python loop over pairs or voxels). Every volume is first
    centred on its own whole-volume mean (variances and covariances do not change), so the
    one-pass sums do not lose precision for images with a large offset.

    Parameters
    ----------
    recons
        ``(N, X, Y, Z)`` array or sequence of ``N`` volumes (reconstructions / prior).
    originals
        ``(M, X, Y, Z)`` array or sequence of ``M`` volumes (candidate originals).
    masks
        ``None`` (whole volume) or ``(M, X, Y, Z)`` boolean: ``masks[j]`` is the mask of
        candidate ``originals[j]``; pair ``(i, j)`` uses ``masks[j]``.
    device
        Torch device (``None``: CUDA if available, else CPU).
    batch_size
        Voxels per chunk (memory ~ ``(N + 3 M) * batch_size * 8`` bytes).
    num_threads
        Torch CPU threads for this call only (``None``: unchanged).
    """
    with torch_threads(num_threads):
        return _masked_moments(recons, originals, masks, device, batch_size)


def _masked_moments(
    recons: ArrayStack,
    originals: ArrayStack,
    masks: ArrayStack | None,
    device: str | torch.device | None,
    batch_size: int,
) -> MaskedMoments:
    xs = as_volume_list(recons, "recons")
    ys = as_volume_list(originals, "originals")
    check_same_shape(xs[0].shape, ys[0].shape, "recons vs originals")
    ms = None
    if masks is not None:
        ms = as_volume_list(masks, "masks")
        if len(ms) != len(ys):
            raise ValueError(f"masks: {len(ms)} masks for {len(ys)} originals")
        check_same_shape(ms[0].shape, ys[0].shape, "masks vs originals")
    dev = resolve_device(device)
    n_rec, n_org = len(xs), len(ys)
    gx = _global_means(xs)
    gy = _global_means(ys)

    if ms is None:
        index = None
        n_vox = int(np.prod(xs[0].shape))
    else:
        union = np.zeros(xs[0].shape, dtype=bool)
        for m in ms:
            union |= np.asarray(m, dtype=bool)
        index = np.flatnonzero(union)
        n_vox = int(index.size)

    f64 = torch.float64
    sx = torch.zeros(n_rec, n_org, dtype=f64, device=dev)
    sxx = torch.zeros(n_rec, n_org, dtype=f64, device=dev)
    sxy = torch.zeros(n_rec, n_org, dtype=f64, device=dev)
    sy = torch.zeros(n_org, dtype=f64, device=dev)
    syy = torch.zeros(n_org, dtype=f64, device=dev)
    cnt = torch.zeros(n_org, dtype=f64, device=dev)
    gx_t = torch.as_tensor(gx, device=dev)[:, None]
    gy_t = torch.as_tensor(gy, device=dev)[:, None]
    flat_x = [v.reshape(-1) for v in xs]
    flat_y = [v.reshape(-1) for v in ys]
    flat_m = None if ms is None else [np.asarray(m, dtype=bool).reshape(-1) for m in ms]

    def take(flat: list[np.ndarray], start: int, stop: int) -> torch.Tensor:
        if index is None:
            parts = [f[start:stop] for f in flat]
        else:
            sel = index[start:stop]
            parts = [f[sel] for f in flat]
        return torch.from_numpy(np.stack(parts)).to(device=dev, dtype=f64)

    step = max(int(batch_size), 1)
    for start in range(0, n_vox, step):
        stop = min(start + step, n_vox)
        x = take(flat_x, start, stop) - gx_t  # (N, c) centred
        y = take(flat_y, start, stop) - gy_t  # (M, c) centred
        if flat_m is None:
            sx += x.sum(1, keepdim=True)
            sxx += (x * x).sum(1, keepdim=True)
            sxy += x @ y.T
            sy += y.sum(1)
            syy += (y * y).sum(1)
            cnt += stop - start
        else:
            m = take(flat_m, start, stop)  # (M, c) 0/1
            my = m * y
            sx += x @ m.T
            sxx += (x * x) @ m.T
            sxy += x @ my.T
            sy += my.sum(1)
            syy += (my * y).sum(1)
            cnt += m.sum(1)

    n = cnt[None, :].expand(n_rec, n_org)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_np = n.cpu().numpy()
        mxc = (sx / n).cpu().numpy()
        myc = np.broadcast_to((sy / cnt).cpu().numpy()[None, :], (n_rec, n_org))
        var_x = (sxx / n).cpu().numpy() - mxc**2
        var_y = np.broadcast_to((syy / cnt).cpu().numpy()[None, :], (n_rec, n_org)) - myc**2
        cov = (sxy / n).cpu().numpy() - mxc * myc
    var_x = np.maximum(var_x, 0.0)
    var_y = np.maximum(var_y, 0.0)
    return MaskedMoments(
        mean_x=mxc + gx[:, None],
        mean_y=myc + gy[None, :],
        var_x=var_x,
        var_y=np.array(var_y),
        cov=cov,
        n=n_np.astype(np.int64),
    )


def correlation_matrix(
    recons: ArrayStack,
    originals: ArrayStack,
    masks: ArrayStack | None = None,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_CHUNK_VOXELS,
    num_threads: int | None = None,
) -> np.ndarray:
    """Pearson correlation of every reconstruction with every candidate original.

    Parameters
    ----------
    recons
        ``(N, X, Y, Z)`` array or sequence of ``N`` volumes (rows of the result).
    originals
        ``(M, X, Y, Z)`` array or sequence of ``M`` volumes (columns of the result).
    masks
        ``None`` (whole volume) or ``(M, X, Y, Z)`` boolean, the mask of each *candidate
        original*: entry ``(i, j)`` is computed inside ``masks[j]``.
    device
        Torch device for the batched products (``None``: CUDA if available, else CPU).
    batch_size
        Voxels per chunk of the batched float64 accumulation.
    num_threads
        Torch CPU threads for this call only (``None``: unchanged).

    Returns
    -------
    np.ndarray
        ``(N, M)`` float64 in ``[-1, 1]``; ``NaN`` where a variance is zero or a mask is
        empty. Higher is more similar. Equal (to ~1e-12) to
        :func:`pearson_correlation` called pair by pair.
    """
    mom = masked_moments_matrix(
        recons, originals, masks, device=device, batch_size=batch_size, num_threads=num_threads
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt(mom.var_x * mom.var_y)
        r = np.where(den > 0, mom.cov / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)
