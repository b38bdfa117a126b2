"""Field of view and grids of the synthetic demo cohort, and its argument checks.

Every demo image covers :data:`DEMO_FOV_MM` centred on :data:`DEMO_FOV_CENTRE_MM` (MNI mm,
RAS+); :class:`DemoGrid` maps voxel indices to world mm on an axis-aligned grid.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_invert.errors import ConfigError

#: Field of view of every demo image, in mm (x, y, z), and its centre in MNI mm.
DEMO_FOV_MM: tuple[float, float, float] = (192.0, 240.0, 192.0)
DEMO_FOV_CENTRE_MM: tuple[float, float, float] = (0.0, -12.0, 18.0)


@dataclass(frozen=True)
class DemoGrid:
    """An axis-aligned grid: voxel ``i`` along axis ``a`` sits at ``origin[a] + i*spacing``."""

    shape: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: float

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) of the voxel centres along x, y and z (1D float64)."""
        return tuple(  # type: ignore[return-value]
            o + self.spacing * np.arange(n) for o, n in zip(self.origin, self.shape)
        )

    def mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable ``(X,1,1)``, ``(1,Y,1)``, ``(1,1,Z)`` world coordinates."""
        x, y, z = self.axes()
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def affine(self) -> np.ndarray:
        """4x4 RAS+ voxel-to-world affine (mm)."""
        aff = np.diag([self.spacing, self.spacing, self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff


def fov_grid(spacing: float, margin_mm: float = 0.0) -> DemoGrid:
    """The demo field of view (plus ``margin_mm`` on every side) sampled at ``spacing``."""
    shape = tuple(round((f + 2 * margin_mm) / spacing) for f in DEMO_FOV_MM)
    origin = tuple(c - (n - 1) / 2.0 * spacing for c, n in zip(DEMO_FOV_CENTRE_MM, shape))
    return DemoGrid(shape, origin, float(spacing))  # type: ignore[arg-type]


def demo_grid(voxel_mm: float = 3.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape ``(X, Y, Z)`` and 4x4 RAS+ affine (mm) of the demo images at ``voxel_mm``.

    The field of view is :data:`DEMO_FOV_MM` (192 x 240 x 192 mm) centred on
    :data:`DEMO_FOV_CENTRE_MM` in MNI space, e.g. ``(64, 80, 64)`` at 3 mm and
    ``(96, 120, 96)`` at 2 mm.
    """
    grid = fov_grid(check_voxel_mm(voxel_mm))
    return grid.shape, grid.affine()


def sample_world(
    volume: np.ndarray, grid: DemoGrid, coords: np.ndarray, order: int, mode: str = "constant"
) -> np.ndarray:
    """Sample ``volume`` (on ``grid``) at world points ``coords`` ``(3, X, Y, Z)`` mm."""
    index = (coords - np.asarray(grid.origin, dtype=np.float32)[:, None, None, None]) / (
        np.float32(grid.spacing)
    )
    return ndi.map_coordinates(volume, index, order=order, mode=mode, cval=0.0, prefilter=False)


def check_int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum}, got {value!r}")
    return number


def check_voxel_mm(voxel_mm: float) -> float:
    try:
        value = float(voxel_mm)
    except (TypeError, ValueError):
        raise ConfigError(f"voxel_mm: must be a number of mm, got {voxel_mm!r}") from None
    if not 1.0 <= value <= 8.0:
        raise ConfigError(f"voxel_mm: must be between 1 and 8 mm, got {voxel_mm!r}")
    return value
