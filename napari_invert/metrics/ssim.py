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

Implementation: the 3D Gaussian filter is separable; each axis is filtered by one dense
matrix product with a banded ``(n_out, n)`` matrix that already contains the reflect
extension (one GEMM per axis: fast on CPU and GPU, differentiable). :func:`ssim_matrix`
filters each volume's mean and variance once and only ``x * y`` per pair, and centres every
volume on its own mean before forming variances (exact for covariances, avoids float32
cancellation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
import torch

from napari_invert.metrics.correlation import (
    DEFAULT_CHUNK_VOXELS,
    ArrayStack,
    as_volume_list,
    check_same_shape,
    masked_moments_matrix,
    masked_values,
    resolve_device,
    torch_threads,
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

K1 = 0.01
K2 = 0.03
SIGMA = 1.5
TRUNCATE = 3.5  # skimage's value for gaussian_weights=True: 11 taps at sigma 1.5

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


# --------------------------------------------------------------------------------------
# kernel and filter matrices
# --------------------------------------------------------------------------------------
def gaussian_kernel1d(sigma: float = SIGMA, truncate: float = TRUNCATE) -> np.ndarray:
    """Normalised 1D Gaussian, radius ``int(truncate * sigma + 0.5)`` (as ``scipy.ndimage``).

    Returns a float64 array of length ``2 * radius + 1`` summing to 1 (11 taps for the
    defaults).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _reflect_index(j: np.ndarray, n: int) -> np.ndarray:
    """Map indices outside ``[0, n)`` into it with ndimage's 'reflect' (d c b a | a b c d)."""
    period = 2 * n
    j = np.mod(j, period)
    return np.where(j >= n, period - 1 - j, j)


@lru_cache(maxsize=64)
def _filter_matrix_np(n: int, lo: int, hi: int, sigma: float, truncate: float) -> np.ndarray:
    """Rows ``lo..hi-1`` of the ``(n, n)`` Gaussian filter matrix with reflect boundary."""
    w = gaussian_kernel1d(sigma, truncate)
    r = (w.size - 1) // 2
    rows = np.arange(lo, hi)
    mat = np.zeros((hi - lo, n), dtype=np.float64)
    for k in range(-r, r + 1):
        cols = _reflect_index(rows + k, n)
        np.add.at(mat, (np.arange(hi - lo), cols), w[k + r])
    mat.setflags(write=False)
    return mat


def _interior_region(shape: Sequence[int], radius: int) -> Region:
    return tuple((radius, n - radius) for n in shape)  # type: ignore[return-value]


def _full_region(shape: Sequence[int]) -> Region:
    return tuple((0, n) for n in shape)  # type: ignore[return-value]


def _bbox_region(mask: np.ndarray) -> Region:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(i.size == 0 for i in idx):
        return tuple((0, 0) for _ in range(3))  # type: ignore[return-value]
    return tuple((int(i[0]), int(i[-1]) + 1) for i in idx)  # type: ignore[return-value]


def _crop(v: torch.Tensor | np.ndarray, region: Region) -> torch.Tensor | np.ndarray:
    (a0, a1), (b0, b1), (c0, c1) = region
    return v[..., a0:a1, b0:b1, c0:c1]


@contextlib.contextmanager
def _exact_fp32_matmul(active: bool) -> Iterator[None]:
    """Disable TF32 for float32 GEMMs while active (CUDA): TF32 would cost ~1e-3 accuracy."""
    if not active:
        yield
        return
    try:
        old = torch.get_float32_matmul_precision()
        if old != "highest":
            torch.set_float32_matmul_precision("highest")
    except RuntimeError:  # precision configured through the newer per-backend API
        yield
        return
    try:
        yield
    finally:
        if old != "highest":
            torch.set_float32_matmul_precision(old)


class WindowedSSIM(torch.nn.Module):
    """Windowed (Gaussian, Wang et al.) SSIM on torch batches; differentiable.

    Holds the Gaussian kernel, the constants and a cache of per-shape filter matrices on
    one device. See the module docstring for the exact definition and boundary rules.

    Parameters
    ----------
    data_range
        ``L`` in ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``; the intensity range of the images
        (same for all pairs you compare).
    sigma, truncate
        Gaussian window (defaults: 1.5 voxels, 11 taps — Wang et al. / skimage).
    k1, k2
        SSIM constants (0.01, 0.03).
    device
        Where the computation runs (``None``: CUDA if available, else CPU). Inputs are
        moved there.
    dtype
        Computation dtype (float32 default; float64 for reference-grade agreement).

    Examples
    --------
    >>> m = WindowedSSIM(data_range=1.0, device="cpu")
    >>> x = torch.rand(2, 1, 24, 24, 24)
    >>> m(x, x)  # (B,) mean SSIM, skimage's interior crop
    tensor([1., 1.])
    """

    def __init__(
        self,
        data_range: float,
        sigma: float = SIGMA,
        truncate: float = TRUNCATE,
        k1: float = K1,
        k2: float = K2,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        data_range = float(data_range)
        if not np.isfinite(data_range) or data_range <= 0:
            raise ValueError(f"data_range must be a positive finite number, got {data_range}")
        self.data_range = data_range
        self.sigma = float(sigma)
        self.truncate = float(truncate)
        self.c1 = (k1 * data_range) ** 2
        self.c2 = (k2 * data_range) ** 2
        self.device = resolve_device(device)
        self.dtype = dtype
        kernel = gaussian_kernel1d(self.sigma, self.truncate)
        self.radius = (kernel.size - 1) // 2
        self.win_size = kernel.size
        self.register_buffer("kernel", torch.as_tensor(kernel, dtype=dtype, device=self.device))
        self._mats: dict[tuple[int, int, int], torch.Tensor] = {}

    # -- filtering --------------------------------------------------------------------
    def _matrix(self, n: int, lo: int, hi: int) -> torch.Tensor:
        key = (n, lo, hi)
        mat = self._mats.get(key)
        if mat is None:
            mat = torch.tensor(
                _filter_matrix_np(n, lo, hi, self.sigma, self.truncate),
                dtype=self.dtype,
                device=self.device,
            )
            self._mats[key] = mat
        return mat

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` if a spatial shape is smaller than the window (11)."""
        if len(shape) != 3:
            raise ValueError(f"expected a 3D spatial shape, got {tuple(shape)}")
        if min(shape) < self.win_size:
            raise ValueError(
                f"volume shape {tuple(shape)} is smaller than the SSIM window "
                f"({self.win_size} voxels per axis)"
            )

    def filter(self, v: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """Gaussian-filter ``v`` (``(..., X, Y, Z)``), evaluated on ``region`` only.

        ``region`` is ``((x0, x1), (y0, y1), (z0, z1))`` output voxel ranges (default: the
        whole volume). The reflect boundary is exact everywhere. Returns
        ``(..., x1-x0, y1-y0, z1-z0)``.
        """
        *lead, nx, ny, nz = v.shape
        if region is None:
            region = _full_region((nx, ny, nz))
        (x0, x1), (y0, y1), (z0, z1) = region
        wx = self._matrix(nx, x0, x1)
        wy = self._matrix(ny, y0, y1)
        wz = self._matrix(nz, z0, z1)
        b = int(np.prod(lead)) if lead else 1
        oy, oz = y1 - y0, z1 - z0
        with _exact_fp32_matmul(v.device.type == "cuda"):
            a = v.reshape(b * nx * ny, nz) @ wz.T  # (b*nx*ny, oz)
            a = torch.matmul(wy, a.reshape(b * nx, ny, oz))  # (b*nx, oy, oz)
            a = torch.matmul(wx, a.reshape(b, nx, oy * oz))  # (b, ox, oy*oz)
        return a.reshape(*lead, x1 - x0, oy, oz)

    # -- statistics -------------------------------------------------------------------
    def _prepare(self, v: torch.Tensor) -> torch.Tensor:
        return v.to(device=self.device, dtype=self.dtype)

    def local_stats(
        self, v: torch.Tensor, region: Region | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Centred volume, centred local mean, local mean and local variance.

        ``v``: ``(B, X, Y, Z)``. Returns ``(vc, mu_c, mu, var)`` where ``vc = v - mean(v)``
        (per volume, full size) and the other three are ``(B, *region)``.
        """
        offset = v.mean(dim=(-3, -2, -1), keepdim=True)
        vc = v - offset
        mu_c = self.filter(vc, region)
        var = self.filter(vc * vc, region) - mu_c * mu_c
        return vc, mu_c, mu_c + offset, var

    def _ssim_from_terms(
        self,
        mu_x: torch.Tensor,
        mu_y: torch.Tensor,
        var_x: torch.Tensor,
        var_y: torch.Tensor,
        cov: torch.Tensor,
    ) -> torch.Tensor:
        num = (2 * mu_x * mu_y + self.c1) * (2 * cov + self.c2)
        den = (mu_x * mu_x + mu_y * mu_y + self.c1) * (var_x + var_y + self.c2)
        return num / den

    def map(self, x: torch.Tensor, y: torch.Tensor, region: Region | None = None) -> torch.Tensor:
        """SSIM map of two batches.

        ``x``, ``y``: ``(B, 1, X, Y, Z)`` or ``(B, X, Y, Z)``. Returns the map with the
        input's layout restricted to ``region`` (default: whole volume, skimage's ``S``).
        """
        if x.shape != y.shape:
            raise ValueError(f"WindowedSSIM: shapes differ ({tuple(x.shape)} vs {tuple(y.shape)})")
        self.check_shape(x.shape[-3:])
        x = self._prepare(x)
        y = self._prepare(y)
        xc, mxc, mx, vx = self.local_stats(x, region)
        yc, myc, my, vy = self.local_stats(y, region)
        cov = self.filter(xc * yc, region) - mxc * myc
        return self._ssim_from_terms(mx, my, vx, vy, cov)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean SSIM per batch item, shape ``(B,)``.

        Without ``mask``: mean over the interior (``radius`` voxels cropped from each face,
        as skimage). With ``mask`` (bool, broadcastable to ``x``): mean of the full map
        over the mask voxels (``NaN`` for an empty mask).
        """
        if mask is None:
            region = _interior_region(x.shape[-3:], self.radius)
            s = self.map(x, y, region)
            return s.reshape(s.shape[0], -1).mean(dim=1)
        s = self.map(x, y)
        m = mask.to(device=s.device, dtype=s.dtype).expand_as(s)
        num = (s * m).reshape(s.shape[0], -1).sum(dim=1)
        den = m.reshape(s.shape[0], -1).sum(dim=1)
        return num / den


# --------------------------------------------------------------------------------------
# numpy front ends
# --------------------------------------------------------------------------------------
def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    check_same_shape(a.shape, b.shape, what)
    if a.ndim != 3:
        raise ValueError(f"{what}: expected 3D volumes (X, Y, Z), got shape {a.shape}")
    return a, b


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
    a, b = _check_pair(a, b, "ssim_map")
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
    a, b = _check_pair(a, b, "ssim_windowed")
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
        value = float(_crop(s_np, _interior_region(a.shape, m.radius)).mean(dtype=np.float64))
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
        region = _bbox_region(union)
    else:
        region = _interior_region(shape, model.radius)
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
                mk = torch.stack([to_t(_crop(mask_list[j], region)) for j in js])
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


# --------------------------------------------------------------------------------------
# global SSIM (the paper's)
# --------------------------------------------------------------------------------------
def _global_ssim_formula(
    mx: np.ndarray,
    my: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    cov: np.ndarray,
    data_range: float,
    k1: float = K1,
    k2: float = K2,
) -> np.ndarray:
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range}")
    return data_range


def ssim_global(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, data_range: float) -> float:
    """The paper's SSIM: one global SSIM over the voxels of the original's mask.

    ``(2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))`` with
    means, population variances and covariance over the mask voxels, ``C1 = (0.01 L)^2``,
    ``C2 = (0.03 L)^2``. No window.

    Parameters
    ----------
    a, b
        ``(X, Y, Z)`` volumes (reconstruction, original); computed in float64.
    mask
        Boolean ``(X, Y, Z)`` — the *original's* mask (``None``: all voxels).
    data_range
        ``L``; explicit and the same for every pair compared.

    Returns
    -------
    float
        In ``[-1, 1]``; 1 for identical images; ``NaN`` for an empty mask.
    """
    a, b = _check_pair(a, b, "ssim_global")
    data_range = _check_range(data_range)
    x, y = masked_values(a, b, mask, "ssim_global")
    if x.size == 0:
        return float("nan")
    mx, my = x.mean(), y.mean()
    xc, yc = x - mx, y - my
    vx, vy = np.mean(xc * xc), np.mean(yc * yc)
    cov = np.mean(xc * yc)
    return float(_global_ssim_formula(mx, my, vx, vy, cov, data_range))


def ssim_global_matrix(
    recons: ArrayStack,
    originals: ArrayStack,
    data_range: float,
    masks: ArrayStack | None = None,
    device: str | torch.device | None = None,
    batch_size: int = DEFAULT_CHUNK_VOXELS,
    num_threads: int | None = None,
) -> np.ndarray:
    """The paper's global SSIM for every (reconstruction, candidate original) pair.

    Vectorised :func:`ssim_global`: the moments of all pairs come from batched float64
    matrix products (:func:`~napari_invert.metrics.correlation.masked_moments_matrix`).

    Parameters
    ----------
    recons, originals
        ``(N, X, Y, Z)`` and ``(M, X, Y, Z)`` (arrays or sequences).
    data_range
        One ``L`` for all pairs.
    masks
        ``None`` (all voxels) or ``(M, X, Y, Z)`` boolean — mask of each candidate
        original; entry ``(i, j)`` uses ``masks[j]``.
    device, batch_size, num_threads
        Torch device, voxels per chunk, torch CPU threads for this call (``None``:
        unchanged).

    Returns
    -------
    np.ndarray
        ``(N, M)`` float64 in ``[-1, 1]``; higher is more similar.
    """
    data_range = _check_range(data_range)
    mom = masked_moments_matrix(
        recons, originals, masks, device=device, batch_size=batch_size, num_threads=num_threads
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return _global_ssim_formula(mom.mean_x, mom.mean_y, mom.var_x, mom.var_y, mom.cov, data_range)
