"""The Gaussian window of the windowed SSIM (Wang et al. 2004), on torch: kernel, filter
matrices with ``scipy.ndimage``'s reflect boundary folded in, and :class:`WindowedSSIM`.

The definition, the boundary rules and the pitfalls are in :mod:`napari_invert.metrics.ssim`
(the numpy front ends most callers use). Constants: ``K1 = 0.01``, ``K2 = 0.03`` (as
skimage), window sigma 1.5 voxels, truncated at 3.5 sigma (11 taps per axis).

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

from napari_invert.metrics.correlation import check_same_shape, resolve_device

__all__ = [
    "K1",
    "K2",
    "SIGMA",
    "TRUNCATE",
    "WindowedSSIM",
    "bbox_region",
    "check_data_range",
    "check_volume_pair",
    "crop_region",
    "gaussian_kernel1d",
    "interior_region",
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


def interior_region(shape: Sequence[int], radius: int) -> Region:
    """``((lo, hi),) * 3`` voxel ranges where a window of ``radius`` fits inside ``shape``."""
    return tuple((radius, n - radius) for n in shape)  # type: ignore[return-value]


def full_region(shape: Sequence[int]) -> Region:
    """Every voxel of ``shape`` as ``((0, n),) * 3``."""
    return tuple((0, n) for n in shape)  # type: ignore[return-value]


def bbox_region(mask: np.ndarray) -> Region:
    """Bounding box of the ``True`` voxels of a 3D ``mask`` (empty ranges for an empty mask)."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(i.size == 0 for i in idx):
        return tuple((0, 0) for _ in range(3))  # type: ignore[return-value]
    return tuple((int(i[0]), int(i[-1]) + 1) for i in idx)  # type: ignore[return-value]


def crop_region(v: torch.Tensor | np.ndarray, region: Region) -> torch.Tensor | np.ndarray:
    """The last three axes of ``v`` cut to ``region`` (a view)."""
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
            region = full_region((nx, ny, nz))
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
            region = interior_region(x.shape[-3:], self.radius)
            s = self.map(x, y, region)
            return s.reshape(s.shape[0], -1).mean(dim=1)
        s = self.map(x, y)
        m = mask.to(device=s.device, dtype=s.dtype).expand_as(s)
        num = (s * m).reshape(s.shape[0], -1).sum(dim=1)
        den = m.reshape(s.shape[0], -1).sum(dim=1)
        return num / den


def check_volume_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    check_same_shape(a.shape, b.shape, what)
    if a.ndim != 3:
        raise ValueError(f"{what}: expected 3D volumes (X, Y, Z), got shape {a.shape}")
    return a, b


def check_data_range(data_range: float) -> float:
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range}")
    return data_range
