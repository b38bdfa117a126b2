"""Voxel-grid geometry: RAS reorientation, isotropic resampling, crop/pad, and the way back.

The model grid of a subject is reached from its native file grid in three steps, each
recorded in a :class:`GridRecord` so that any model-grid output (a reconstruction, a
segmentation) can be put back on the subject's native grid with its native affine:

1. **reorient** to the closest RAS+ axis order (a pure permutation/flip of the array,
   exact; oblique direction cosines are kept in the affine, never resampled away);
2. **resample** to an isotropic voxel size (mm) that covers the same field of view,
   centred on the native field of view (linear for images, nearest for labels);
3. **crop/pad** by an integer window ``offset`` / ``shape`` (exact).

Tolerances: steps 1 and 3 are exact. Step 2 and its inverse interpolate twice; for a
smooth image (features several voxels wide) the round trip native -> 2 mm -> native
differs from the original by a few per cent of the intensity range at most (the tests
check ``max |error| < 0.05`` and mean ``< 0.005`` for a unit-height Gaussian of
sigma 8 mm, 1 mm -> 2 mm -> 1 mm). Voxels outside the crop window come back as 0.

All arrays are ``(X, Y, Z)``; affines are 4x4 voxel -> world (mm).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

from napari_invert.data.nifti import voxel_sizes

Shape3 = tuple[int, int, int]
_RAS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)


def _shape3(shape: Sequence[int]) -> Shape3:
    if len(shape) != 3:
        raise ValueError(f"expected a 3D shape, got {tuple(shape)}")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


# -- reorientation -------------------------------------------------------------------------
def ras_orientation(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation ``(3, 2)`` that takes an array with ``affine`` to RAS+."""
    return io_orientation(np.asarray(affine, dtype=np.float64))


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permute/flip ``array`` (X, Y, Z) to the closest RAS+ order (no interpolation).

    Returns ``(ras_array, ras_affine, ornt)``; ``ornt`` undoes with :func:`reorient_from_ras`.
    World coordinates of every voxel are unchanged.
    """
    ornt = ras_orientation(affine)
    ras = np.ascontiguousarray(apply_orientation(array, ornt))
    ras_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, array.shape[:3])
    return ras, ras_affine, ornt


def reorient_from_ras(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Inverse of :func:`reorient_to_ras` for the array (exact)."""
    back = ornt_transform(_RAS_ORNT, np.asarray(ornt, dtype=np.float64))
    return np.ascontiguousarray(apply_orientation(array, back))


# -- resampling ----------------------------------------------------------------------------
def isotropic_grid(shape: Sequence[int], affine: np.ndarray, voxel_mm: float) -> tuple[Shape3, np.ndarray]:
    """A grid of ``voxel_mm`` voxels covering the field of view of ``(shape, affine)``.

    Axis directions are those of ``affine``; the number of voxels per axis is
    ``round(extent_mm / voxel_mm)`` (at least 1) and both grids share their centre.
    """
    if voxel_mm <= 0:
        raise ValueError(f"voxel_mm must be > 0, got {voxel_mm}")
    shape_a = np.asarray(_shape3(shape), dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    zooms = np.asarray(voxel_sizes(affine))
    directions = affine[:3, :3] / zooms
    new_shape = np.maximum(1, np.round(shape_a * zooms / voxel_mm)).astype(int)
    centre = affine[:3, :3] @ ((shape_a - 1) / 2) + affine[:3, 3]
    lin = directions * voxel_mm
    new_affine = np.eye(4)
    new_affine[:3, :3] = lin
    new_affine[:3, 3] = centre - lin @ ((new_shape - 1) / 2)
    return _shape3(new_shape), new_affine


def resample(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_affine: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """Sample ``array`` (on ``src_affine``) at the voxel centres of ``(dst_shape, dst_affine)``.

    ``order``: 0 = nearest (labels, masks; dtype kept), 1 = linear (images; float32).
    Bool masks with ``order >= 1`` are interpolated as 0/1 and thresholded at 0.5.
    Integer arrays need ``order=0``. Outside the source, edge values are repeated.
    """
    dst_shape = _shape3(dst_shape)
    m = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    matrix, offset = m[:3, :3], m[:3, 3]
    is_bool = array.dtype == np.bool_
    if array.dtype.kind in "iu" and order != 0:
        raise ValueError("integer (label) arrays must be resampled with order=0")
    if tuple(array.shape) == dst_shape and np.allclose(m, np.eye(4), atol=1e-6):
        return array.copy()
    src = array.astype(np.float32, copy=False) if order != 0 else array
    if is_bool and order == 0:
        src = array.view(np.uint8)
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        matrix = np.diag(matrix)  # separable: faster path in scipy
    with warnings.catch_warnings():  # scipy notes a 1-D matrix changed meaning in 0.18
        warnings.filterwarnings("ignore", message=".*1-D array supplied.*", category=UserWarning)
        out = ndimage.affine_transform(
            src, matrix, offset=offset, output_shape=dst_shape, order=order, mode="nearest"
        )
    if is_bool:
        return out.astype(bool) if order == 0 else out >= 0.5
    return out


# -- crop / pad ----------------------------------------------------------------------------
def crop_or_pad(
    array: np.ndarray, offset: Sequence[int], shape: Sequence[int], fill: float = 0
) -> np.ndarray:
    """Window of ``array``: ``out[i] = array[i + offset]`` where that exists, else ``fill``.

    Negative offsets / larger shapes pad, positive offsets / smaller shapes crop. Exact;
    the inverse is ``crop_or_pad(out, -offset, array.shape)`` (cropped-away voxels -> fill).
    """
    shape = _shape3(shape)
    out = np.full(shape, fill, dtype=array.dtype)
    src, dst = [], []
    for ax in range(3):
        o, n_in, n_out = int(offset[ax]), array.shape[ax], shape[ax]
        s0, s1 = max(o, 0), min(o + n_out, n_in)
        if s1 <= s0:
            return out
        src.append(slice(s0, s1))
        dst.append(slice(s0 - o, s1 - o))
    out[tuple(dst)] = array[tuple(src)]
    return out


def next_multiple(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n`` (and >= ``multiple``)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return max(multiple, -(-int(n) // multiple) * multiple)


def bounding_box(mask: np.ndarray) -> tuple[Shape3, Shape3]:
    """``(start, stop)`` voxel indices of the non-zero region of a 3D mask (stop exclusive)."""
    if not mask.any():
        raise ValueError("bounding box of an empty mask")
    start, stop = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        start.append(int(idx[0]))
        stop.append(int(idx[-1]) + 1)
    return _shape3(start), _shape3(stop)


def centred_window(start: Sequence[int], stop: Sequence[int], multiple: int) -> tuple[Shape3, Shape3]:
    """Grow ``[start, stop)`` symmetrically to a size that is a multiple of ``multiple``.

    Returns ``(offset, shape)`` for :func:`crop_or_pad`.
    """
    offset, shape = [], []
    for a, b in zip(start, stop):
        size = next_multiple(int(b) - int(a), multiple)
        extra = size - (int(b) - int(a))
        offset.append(int(a) - extra // 2)
        shape.append(size)
    return _shape3(offset), _shape3(shape)


def translation(offset: Sequence[float]) -> np.ndarray:
    """4x4 voxel-space translation by ``offset`` voxels."""
    t = np.eye(4)
    t[:3, 3] = np.asarray(offset, dtype=np.float64)
    return t


# -- the record ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GridRecord:
    """How a subject's native grid maps to its model grid (and back).

    * ``native_shape``/``native_affine``: the file's grid.
    * ``ornt``: nibabel orientation ``(3, 2)`` native -> RAS+ (exact permutation/flip).
    * ``resampled_shape``/``resampled_affine``: RAS+ grid at ``voxel_mm`` (equal to the
      reoriented native grid when ``voxel_mm`` is ``None``).
    * ``offset``/``shape``: crop/pad window on the resampled grid;
      model voxel ``i`` is resampled voxel ``i + offset``.
    """

    native_shape: Shape3
    native_affine: np.ndarray
    ornt: np.ndarray
    resampled_shape: Shape3
    resampled_affine: np.ndarray
    voxel_mm: float | None = None
    offset: Shape3 = (0, 0, 0)
    shape: Shape3 | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "native_shape", _shape3(self.native_shape))
        object.__setattr__(self, "resampled_shape", _shape3(self.resampled_shape))
        object.__setattr__(self, "offset", _shape3(self.offset))
        object.__setattr__(self, "shape", _shape3(self.shape or self.resampled_shape))
        for name in ("native_affine", "resampled_affine", "ornt"):
            value = np.array(getattr(self, name), dtype=np.float64)
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    # construction ----------------------------------------------------------------------
    @classmethod
    def plan(
        cls, native_shape: Sequence[int], native_affine: np.ndarray, voxel_mm: float | None = None
    ) -> GridRecord:
        """Record for reorientation to RAS+ and (if ``voxel_mm``) isotropic resampling."""
        native_shape = _shape3(native_shape)
        native_affine = np.asarray(native_affine, dtype=np.float64)
        ornt = ras_orientation(native_affine)
        ras_affine = native_affine @ inv_ornt_aff(ornt, native_shape)
        ras_shape = _shape3([native_shape[int(a)] for a in np.argsort(ornt[:, 0])])
        if voxel_mm is None:
            res_shape, res_affine = ras_shape, ras_affine
        else:
            res_shape, res_affine = isotropic_grid(ras_shape, ras_affine, float(voxel_mm))
        return cls(native_shape, native_affine, ornt, res_shape, res_affine, voxel_mm)

    def with_window(self, offset: Sequence[int], shape: Sequence[int]) -> GridRecord:
        """Same record with a crop/pad window on the resampled grid."""
        return replace(self, offset=_shape3(offset), shape=_shape3(shape))

    # derived ---------------------------------------------------------------------------
    @property
    def ras_shape(self) -> Shape3:
        """Native grid shape after reorientation to RAS+."""
        return _shape3([self.native_shape[int(a)] for a in np.argsort(self.ornt[:, 0])])

    @property
    def ras_affine(self) -> np.ndarray:
        """Native affine after reorientation to RAS+."""
        return self.native_affine @ inv_ornt_aff(self.ornt, self.native_shape)

    @property
    def affine(self) -> np.ndarray:
        """Model-grid affine (4x4, voxel -> world mm)."""
        return self.resampled_affine @ translation(self.offset)

    # forward ---------------------------------------------------------------------------
    def to_resampled(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """Native-grid array -> RAS+ resampled grid (before the crop window)."""
        if tuple(array.shape) != self.native_shape:
            raise ValueError(f"array shape {array.shape} is not the native shape {self.native_shape}")
        ras, ras_affine, _ = reorient_to_ras(array, self.native_affine)
        return resample(ras, ras_affine, self.resampled_shape, self.resampled_affine, order)

    def window(self, array: np.ndarray, fill: float = 0) -> np.ndarray:
        """Resampled-grid array -> model grid (crop/pad, exact)."""
        return crop_or_pad(array, self.offset, self.shape, fill)  # type: ignore[arg-type]

    def to_model(self, array: np.ndarray, order: int = 1, fill: float = 0) -> np.ndarray:
        """Native-grid array -> model grid (reorient, resample, crop/pad)."""
        return self.window(self.to_resampled(array, order), fill)

    # inverse ---------------------------------------------------------------------------
    def to_native(self, array: np.ndarray, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Model-grid array ``(X, Y, Z)`` -> ``(array on the native grid, native affine)``.

        ``order``: 1 (linear) for intensities, 0 (nearest) for labels and masks. Voxels
        outside the crop window are 0 (False for masks).
        """
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} is not the model shape {self.shape}")
        res = crop_or_pad(array, [-o for o in self.offset], self.resampled_shape, 0)
        ras = resample(res, self.resampled_affine, self.ras_shape, self.ras_affine, order)
        return reorient_from_ras(ras, self.ornt), self.native_affine.copy()

    # serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists and numbers only)."""
        return {
            "native_shape": list(self.native_shape),
            "native_affine": self.native_affine.tolist(),
            "ornt": self.ornt.tolist(),
            "resampled_shape": list(self.resampled_shape),
            "resampled_affine": self.resampled_affine.tolist(),
            "voxel_mm": self.voxel_mm,
            "offset": list(self.offset),
            "shape": list(self.shape),  # type: ignore[arg-type]
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridRecord:
        """Inverse of :meth:`to_dict`."""
        return cls(
            native_shape=data["native_shape"],
            native_affine=np.asarray(data["native_affine"], dtype=np.float64),
            ornt=np.asarray(data["ornt"], dtype=np.float64),
            resampled_shape=data["resampled_shape"],
            resampled_affine=np.asarray(data["resampled_affine"], dtype=np.float64),
            voxel_mm=data.get("voxel_mm"),
            offset=data.get("offset", (0, 0, 0)),
            shape=data.get("shape"),
        )


#: Alias used in the architecture notes.
NativeGrid = GridRecord
