"""Structural similarity (SSIM): the windowed SSIM of Wang et al. and the paper's global SSIM.

Two different quantities share the name "SSIM"; always say which one a number is.

**Windowed SSIM** (:func:`ssim_windowed`, :func:`ssim_map`, :func:`ssim_matrix`,
:class:`WindowedSSIM`) — Wang, Bovik, Sheikh & Simoncelli (2004). Local means, variances
and the covariance are taken under an isotropic Gaussian window (sigma 1.5 voxels, 11 taps
per axis: radius ``int(3.5 * 1.5 + 0.5) = 5``), with population (biased) covariance, and
give one SSIM value per voxel (the *SSIM map*, used for overlays)::

    SSIM(p) = (2 mu_x mu_y + C1) (2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (s_x^2 + s_y^2 + C2))

with ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` and ``L = data_range``. The scalar is the
mean of the map. This reproduces ``skimage.metrics.structural_similarity(a, b,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L)`` exactly
(to float rounding, < 1e-6 in float32), including its boundary handling:

* the Gaussian filtering extends the volume with ``scipy.ndimage`` mode ``'reflect'``
  (half-sample symmetric: ``d c b a | a b c d | d c b a``; this is *not* torch's
  ``'reflect'`` padding, which omits the edge voxel). Here the extension is folded into the
  filter matrices, so the map is correct up to the border;
* the unmasked mean (skimage's ``mssim``) averages only the interior, cropping
  ``pad = (11 - 1) // 2 = 5`` voxels from every face, where the window fits inside the
  volume; the border voxels of the map are returned but not averaged;
* the masked mean is the plain mean of the full map over the mask voxels (the border
  crop is *not* applied there — brain masks rarely touch the border).

**Global SSIM** (:func:`ssim_global`, :func:`ssim_global_matrix`) — what the paper's
published numbers (0.73 / 0.61) are: ONE application of the same formula with the means,
variances (population) and covariance taken over all voxels of the original's mask. It is
much less sensitive to local structure than the windowed SSIM (a skull-stripped mean brain
already scores high), so report it next to a trivial prior.

Pitfalls
--------
* ``data_range`` (``L``) must be given explicitly for float images and must be the *same*
  for every pair being compared or ranked — a per-pair range changes ``C1``/``C2`` and makes
  the scores incomparable. Use the intensity range of the originals (e.g. ``1.0`` after
  percentile scaling to ``[0, 1]``; :func:`common_data_range` helps). skimage's default
  for floats (``2.0``, from ``[-1, 1]``) is almost never what you want.
* Both SSIMs are *not* invariant to intensity scaling or offsets (unlike the correlation).
* Values lie in ``[-1, 1]`` (``1`` for identical images); the windowed map can be
  negative in anti-correlated regions.

The Gaussian window engine (kernel, filter matrices, :class:`WindowedSSIM`) lives in
:mod:`napari_invert.metrics.ssim_torch`, the global SSIM in
:mod:`napari_invert.metrics.global_ssim`; both are re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_invert.metrics.correlation import (
    ArrayStack,
    as_volume_list,
    check_same_shape,
    resolve_device,
    torch_threads,
)
from napari_invert.metrics.global_ssim import ssim_global, ssim_global_matrix
from napari_invert.metrics.ssim_torch import (
    WindowedSSIM,
    bbox_region,
    check_volume_pair,
    crop_region,
    gaussian_kernel1d,
    interior_region,
)

__all__ = [
    "WindowedSSIM",
    "common_data_range",
    "gaussian_kernel1d",
    "ssim_global",
    "ssim_global_matrix",
    "ssim_map",
    "ssim_matrix",
    "ssim_windowed",
]


# --------------------------------------------------------------------------------------
# numpy front ends
# --------------------------------------------------------------------------------------
def common_data_range(volumes: ArrayStack) -> float:
    """``max - min`` over all voxels of all volumes: one ``data_range`` for a whole study.

    Pass the *originals* (the reference images); reconstructions may over/undershoot.
    """
    vols = as_volume_list(volumes, "volumes")
    lo = min(float(np.min(v)) for v in vols)
    hi = max(float(np.max(v)) for v in vols)
    return hi - lo


def ssim_map(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> np.ndarray:
    """Full windowed-SSIM map of two volumes (for overlays).

    Parameters
    ----------
    a, b
        ``(X, Y, Z)`` volumes, each axis >= 11 voxels.
    data_range
        Intensity range ``L`` (explicit; the same for every pair you compare).
    device, dtype
        Where/how to compute (``None``: CUDA if available; float64 default).

    Returns
    -------
    np.ndarray
        ``(X, Y, Z)`` float32 map in ``[-1, 1]``; equals skimage's ``full=True`` image
        (reflect boundary, no crop).
    """
    a, b = check_volume_pair(a, b, "ssim_map")
    m = WindowedSSIM(data_range, device=device, dtype=dtype)
    with torch.no_grad():
        s = m.map(
            torch.from_numpy(np.ascontiguousarray(a))[None], torch.from_numpy(np.ascontiguousarray(b))[None]
        )
    return s[0].cpu().numpy().astype(np.float32)


def ssim_windowed(
    a: np.ndarray,
    b: np.ndarray,
    data_range: float,
    mask: np.ndarray | None = None,
    return_map: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> float | tuple[float, np.ndarray]:
    """Mean windowed (Gaussian, Wang et al.) SSIM of two volumes.

    Parameters
    ----------
    a, b
        ``(X, Y, Z)`` volumes (reconstruction, original), each axis >= 11 voxels.
    data_range
        Intensity range ``L``; must be explicit and identical for all compared pairs.
    mask
        Optional boolean ``(X, Y, Z)`` (the original's brain mask). Without it: mean over
        the interior cropped by 5 voxels per face (== skimage ``mssim``). With it: mean of
        the full map over the mask voxels (``NaN`` if the mask is empty).
    return_map
        Also return the full ``(X, Y, Z)`` float32 map.
    device, dtype
        Where/how to compute (``None``: CUDA if available; float64 default).

    Returns
    -------
    float or (float, np.ndarray)
        Mean SSIM in ``[-1, 1]`` (and the map).
    """
    a, b = check_volume_pair(a, b, "ssim_windowed")
    m = WindowedSSIM(data_range, device=device, dtype=dtype)
    m.check_shape(a.shape)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        check_same_shape(mask.shape, a.shape, "ssim_windowed mask")
    ta = torch.from_numpy(np.ascontiguousarray(a))[None]
    tb = torch.from_numpy(np.ascontiguousarray(b))[None]
    with torch.no_grad():
        if mask is None and not return_map:
            return float(m(ta, tb)[0])
        s = m.map(ta, tb)[0]
    s_np = s.cpu().numpy()
    if mask is None:
        value = float(crop_region(s_np, interior_region(a.shape, m.radius)).mean(dtype=np.float64))
    else:
        value = float(s_np[mask].mean(dtype=np.float64)) if mask.any() else float("nan")
    if return_map:
        return value, s_np.astype(np.float32)
    return value


def ssim_matrix(
    recons: ArrayStack,
    originals: ArrayStack,
    data_range: float,
    masks: ArrayStack | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    memory_budget_gb: float = 1.0,
    progress: bool = False,
    num_threads: int | None = None,
) -> np.ndarray:
    """Mean windowed SSIM of every reconstruction with every candidate original.

    Same definition and boundary rules as :func:`ssim_windowed` (entry ``(i, j)`` equals
    ``ssim_windowed(recons[i], originals[j], data_range, mask=masks[j])`` to ~1e-6), but
    batched: the local mean and variance of each volume are filtered once, and only the
    product ``x * y`` is filtered per pair (one 3-GEMM separable filter). With masks, only
    the bounding box of the union of the masks is evaluated.

    Parameters
    ----------
    recons
        ``(N, X, Y, Z)`` array or sequence (rows).
    originals
        ``(M, X, Y, Z)`` array or sequence (columns).
    data_range
        One intensity range ``L`` for all pairs (see module pitfalls).
    masks
        ``None`` (interior mean, as skimage) or ``(M, X, Y, Z)`` boolean: ``masks[j]`` is
        the mask of candidate ``originals[j]``, used for every pair in column ``j``.
    device
        Torch device (``None``: CUDA if available, else CPU).
    batch_size
        Pairs filtered together (default 1 on CPU — fastest there —, 8 on CUDA).
    dtype
        Computation dtype (float32 default; volumes are centred first, so float32
        agrees with float64 to ~1e-6).
    memory_budget_gb
        Upper bound for the cached per-original statistics; above it the originals are
        processed in blocks and the reconstruction statistics recomputed per block.
    progress
        Show a tqdm bar over reconstructions x blocks.
    num_threads
        Torch CPU threads for this call only (``None``: unchanged). On a small shared
        machine ``1`` can be several times faster than oversubscribed threads.

    Returns
    -------
    np.ndarray
        ``(N, M)`` float64; higher is more similar.
    """
    with torch_threads(num_threads):
        return _ssim_matrix(
            recons,
            originals,
            data_range,
            masks,
            device,
            batch_size,
            dtype,
            memory_budget_gb,
            progress,
        )


def _ssim_matrix(
    recons: ArrayStack,
    originals: ArrayStack,
    data_range: float,
    masks: ArrayStack | None,
    device: str | torch.device | None,
    batch_size: int | None,
    dtype: torch.dtype,
    memory_budget_gb: float,
    progress: bool,
) -> np.ndarray:
    xs = as_volume_list(recons, "recons")
    ys = as_volume_list(originals, "originals")
    shape = xs[0].shape
    check_same_shape(shape, ys[0].shape, "recons vs originals")
    dev = resolve_device(device)
    model = WindowedSSIM(data_range, device=dev, dtype=dtype)
    model.check_shape(shape)
    if batch_size is None:
        batch_size = 8 if dev.type == "cuda" else 1
    batch_size = max(int(batch_size), 1)

    mask_list: list[np.ndarray] | None = None
    if masks is not None:
        mask_list = [np.asarray(m, dtype=bool) for m in as_volume_list(masks, "masks")]
        if len(mask_list) != len(ys):
            raise ValueError(f"masks: {len(mask_list)} masks for {len(ys)} originals")
        check_same_shape(mask_list[0].shape, shape, "masks vs originals")
        union = np.logical_or.reduce(mask_list)
        region = bbox_region(union)
    else:
        region = interior_region(shape, model.radius)
    rshape = tuple(hi - lo for lo, hi in region)
    n_region = int(np.prod(rshape))
    out = np.full((len(xs), len(ys)), np.nan, dtype=np.float64)
    if n_region == 0:
        return out

    itemsize = torch.tensor([], dtype=dtype).element_size()
    per_original = itemsize * (
        3 * n_region + int(np.prod(shape)) + (n_region if mask_list is not None else 0)
    )
    block = max(1, min(len(ys), int(memory_budget_gb * 2**30 // max(per_original, 1))))

    def to_t(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(v)).to(device=dev, dtype=dtype)

    from tqdm.auto import tqdm

    n_blocks = (len(ys) + block - 1) // block
    bar = tqdm(total=len(xs) * n_blocks, desc="SSIM matrix", disable=not progress)
    with torch.no_grad():
        for j0 in range(0, len(ys), block):
            js = list(range(j0, min(j0 + block, len(ys))))
            # per-original terms, computed once per block: centred volume, centred local
            # mean, local mean, local variance (+ mask crop)
            y_stats = [model.local_stats(to_t(ys[j])[None], region) for j in js]
            yc = torch.cat([s[0] for s in y_stats])  # (b, X, Y, Z)
            myc = torch.cat([s[1] for s in y_stats])  # (b, *r)
            my = torch.cat([s[2] for s in y_stats])
            vy = torch.cat([s[3] for s in y_stats])
            del y_stats
            if mask_list is not None:
                mk = torch.stack([to_t(crop_region(mask_list[j], region)) for j in js])
                mk_count = mk.reshape(len(js), -1).sum(1)
            for i, x_np in enumerate(xs):
                xc, mxc, mx, vx = model.local_stats(to_t(x_np)[None], region)
                mx2c1 = mx * mx + model.c1
                vxc2 = vx + model.c2
                mx2 = 2 * mx
                for k0 in range(0, len(js), batch_size):
                    sl = slice(k0, min(k0 + batch_size, len(js)))
                    cov = model.filter(xc * yc[sl], region)
                    cov.addcmul_(mxc, myc[sl], value=-1.0)
                    num = torch.mul(mx2, my[sl]).add_(model.c1)
                    num.mul_(cov.mul_(2).add_(model.c2))
                    den = torch.addcmul(mx2c1, my[sl], my[sl])
                    den.mul_(vy[sl] + vxc2)
                    s = num.div_(den).reshape(num.shape[0], -1)
                    if mask_list is None:
                        vals = s.mean(dim=1, dtype=torch.float64)
                    else:
                        m = mk[sl].reshape(num.shape[0], -1)
                        vals = (s * m).sum(dim=1, dtype=torch.float64) / mk_count[sl].double()
                    out[i, js[sl]] = vals.cpu().numpy()
                bar.update(1)
    bar.close()
    return out
