"""NIfTI reading and writing with validation.

Every problem with an input file (missing, unreadable, truncated, wrong dimensionality,
NaN/Inf, non-integer labels, empty mask) raises
:class:`~napari_invert.errors.DataError` naming the file and the problem in one phrase.

Arrays are returned in the file's own voxel order ``(X, Y, Z)``; the 4x4 ``affine`` maps
voxel indices to world millimetres (nibabel's convention: the sform if set, else the
qform). Use :mod:`napari_invert.data.geometry` to bring them to RAS+.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from napari_invert._io import atomic_path
from napari_invert.errors import DataError

Kind = Literal["image", "label", "mask"]
KINDS: tuple[str, ...] = ("image", "label", "mask")

#: Exceptions nibabel / gzip / zlib raise for damaged files (BadGzipFile is an OSError).
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, ImageFileError, HeaderDataError)


@dataclass(eq=False)
class Volume:
    """A 3D volume and where it lives in the world.

    ``array``: ``(X, Y, Z)``; float32 for images, int64 for labels, bool for masks.
    ``affine``: 4x4 float64 voxel-index -> world (mm). ``path``: source file or ``None``.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = field(default=None)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.path is not None:
            self.path = Path(self.path)

    @property
    def shape(self) -> tuple[int, ...]:
        """Voxel grid shape ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return voxel_sizes(self.affine)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Orientation letters of the array axes, e.g. ``('L', 'P', 'S')``."""
        return tuple(nib.aff2axcodes(self.affine))  # type: ignore[return-value]


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each of the three array axes of ``affine``."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    return tuple(float(v) for v in np.sqrt((a**2).sum(axis=0)))  # type: ignore[return-value]


def _open(path: Path) -> nib.spatialimages.SpatialImage:
    """Load the header of ``path`` (no voxel data yet); DataError if missing or unreadable."""
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a file")
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as exc:
        raise DataError(path, f"unreadable or corrupt NIfTI ({_short(exc)})") from None
    return img


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of a NIfTI file from its header only (fast, no voxel data read).

    Trailing singleton dimensions beyond the third are dropped from the shape.
    """
    path = Path(path)
    img = _open(path)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape, _checked_affine(path, img)


def _checked_affine(path: Path, img: nib.spatialimages.SpatialImage) -> np.ndarray:
    affine = img.affine
    if affine is None:
        raise DataError(path, "no affine (voxel-to-world transform) in header")
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, "degenerate affine (voxel-to-world transform) in header")
    return affine


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def load_nifti(path: str | Path, kind: Kind = "image") -> Volume:
    """Read and validate one 3D NIfTI file.

    ``kind``:

    * ``"image"`` -> float32 array (scale factors applied); NaN/Inf rejected.
    * ``"label"`` -> int64 array; non-integer or non-finite values rejected.
    * ``"mask"`` -> bool array (``value != 0``); an all-zero mask is rejected.

    A trailing singleton 4th dimension (``(X, Y, Z, 1)``) is squeezed; anything that is
    not 3D after that is rejected. The whole voxel array is read here, so truncated or
    corrupt gzip streams are detected now rather than later.

    Raises
    ------
    DataError
        ``path`` plus one short phrase (``file not found``, ``unreadable or corrupt
        NIfTI``, ``truncated or corrupt voxel data``, ``not a 3D volume``, ...).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    img = _open(path)
    affine = _checked_affine(path, img)
    try:
        data = np.asarray(img.dataobj)
    except _READ_ERRORS as exc:
        raise DataError(path, f"truncated or corrupt voxel data ({_short(exc)})") from None
    except MemoryError:
        raise DataError(path, "corrupt header (voxel data too large to read)") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"not a 3D volume (shape {tuple(data.shape)})")
    if data.dtype.kind == "c" or data.dtype.fields is not None:
        raise DataError(path, f"unsupported voxel type {data.dtype}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise DataError(path, "contains NaN or Inf values")
    if kind == "image":
        array = data.astype(np.float32, copy=False)
        if not np.all(np.isfinite(array)):
            raise DataError(path, "values overflow float32")
    elif kind == "label":
        if data.dtype.kind == "f":
            rounded = np.rint(data)
            if not np.array_equal(rounded, data):
                raise DataError(path, "label map has non-integer values")
            data = rounded
        array = data.astype(np.int64, copy=False)
    else:  # mask
        array = data != 0
        if not array.any():
            raise DataError(path, "empty mask (no non-zero voxel)")
    return Volume(array=array, affine=affine, path=path)


def _storage_dtype(array: np.ndarray) -> np.dtype:
    """On-disk dtype: uint8 for masks, the smallest of uint8/int16/int32 for integers,
    float32 for everything else."""
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if array.dtype.kind in "iu":
        if array.size == 0:
            return np.dtype(np.uint8)
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= 255:
            return np.dtype(np.uint8)
        if lo >= -32768 and hi <= 32767:
            return np.dtype(np.int16)
        if lo >= -(2**31) and hi < 2**31:
            return np.dtype(np.int32)
        raise ValueError(f"integer values {lo}..{hi} do not fit int32")
    return np.dtype(np.float32)


def save_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a 3D array as NIfTI-1 atomically (temp file + rename); return ``path``.

    Storage type: bool -> uint8 (0/1); integer labels -> uint8 or int16 (int32 if
    needed); anything else -> float32. The affine is written to both sform and qform
    (code 1 = scanner), units mm. Use a ``.nii.gz`` name for compression.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"save_nifti expects a 3D array, got shape {array.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    dtype = _storage_dtype(array)
    img = nib.Nifti1Image(np.ascontiguousarray(array.astype(dtype, copy=False)), affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path
