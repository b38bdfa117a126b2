"""One subject of a cohort: its files, its brain-mask rule and its volumes.

:class:`Subject` knows where a subject's image, labels and mask are and how to get the
brain mask (``mask_rule``); :class:`SubjectVolumes` holds the three volumes read once and
checked to share one grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_invert.data.cohort_files import grid_mismatch
from napari_invert.data.nifti import Volume, load_nifti
from napari_invert.errors import DataError

MaskRule = Literal["file", "image>0", "label>0"]
MASK_RULES: tuple[str, ...] = ("file", "image>0", "label>0")
VARIANTS: tuple[str, ...] = ("skull_stripped", "full_head")


@dataclass(frozen=True)
class SubjectVolumes:
    """One subject's volumes on its native grid, each file read once.

    ``image`` float32, ``labels`` int64 original values (or ``None``), ``mask`` bool;
    all ``(X, Y, Z)`` on the same grid and affine.
    """

    image: Volume
    labels: Volume | None
    mask: Volume


@dataclass(frozen=True, eq=False)
class Subject:
    """One subject: its files and how to get its brain mask.

    ``mask_rule``: ``"file"`` (``mask_path``), ``"image>0"`` (skull-stripped images) or
    ``"label>0"`` (the label map covers the whole brain). ``skull_stripped``: the image
    file has no skull. ``demographics``: e.g. ``{"Age": 38.8, "Sex": "M"}``.
    """

    subject_id: str
    image_path: Path
    label_path: Path | None = None
    mask_path: Path | None = None
    skull_stripped: bool = False
    mask_rule: MaskRule = "file"
    demographics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_path", Path(self.image_path))
        if self.label_path is not None:
            object.__setattr__(self, "label_path", Path(self.label_path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))
        if self.mask_rule not in MASK_RULES:
            raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {self.mask_rule!r}")

    @property
    def files(self) -> list[Path]:
        """Every file this subject uses (image, labels, mask file)."""
        out = [self.image_path]
        if self.label_path is not None:
            out.append(self.label_path)
        if self.mask_path is not None and self.mask_rule == "file":
            out.append(self.mask_path)
        return out

    def load_image(self) -> Volume:
        """Image as float32 ``(X, Y, Z)`` with its affine (as stored: skull or not)."""
        return load_nifti(self.image_path, "image")

    def load_labels(self) -> Volume | None:
        """Label map as int64 original values, or ``None`` if the subject has none."""
        if self.label_path is None:
            return None
        return load_nifti(self.label_path, "label")

    def load_mask(self) -> Volume:
        """Brain mask (bool ``(X, Y, Z)``) from ``mask_rule``; ``DataError`` if empty."""
        return self.load().mask

    def load(self) -> SubjectVolumes:
        """Image, labels and mask, each file read once, checked to share one grid."""
        image = self.load_image()
        labels = self.load_labels()
        if labels is not None:
            _check_same_grid(image, labels)
        mask = self._mask_from(image, labels)
        return SubjectVolumes(image=image, labels=labels, mask=mask)

    def _mask_from(self, image: Volume, labels: Volume | None) -> Volume:
        if self.mask_rule == "file":
            if self.mask_path is None:
                raise DataError(self.image_path, "no mask file for this subject (mask rule 'file')")
            mask = load_nifti(self.mask_path, "mask")
            _check_same_grid(image, mask)
            return mask
        if self.mask_rule == "image>0":
            arr = image.array > 0
            if not arr.any():
                raise DataError(self.image_path, "empty brain mask (no voxel with image > 0)")
            return Volume(arr, image.affine, self.image_path)
        if labels is None:
            raise DataError(self.image_path, "mask rule 'label>0' but the subject has no label file")
        arr = labels.array > 0
        if not arr.any():
            raise DataError(labels.path or self.image_path, "empty brain mask (no labelled voxel)")
        return Volume(arr, labels.affine, labels.path)

    def load_variant(self, variant: str) -> Volume:
        """Image of one variant (float32 ``(X, Y, Z)``, native grid).

        ``"skull_stripped"``: image times mask (the image itself if already stripped);
        ``"full_head"``: the image with skull (``DataError`` if the cohort has none).
        """
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "full_head":
            if self.skull_stripped:
                raise DataError(self.image_path, "no full-head image: this cohort is skull-stripped only")
            return self.load_image()
        if self.skull_stripped:
            return self.load_image()
        vols = self.load()
        stripped = np.where(vols.mask.array, vols.image.array, np.float32(0)).astype(np.float32)
        return Volume(stripped, vols.image.affine, self.image_path)


def _check_same_grid(image: Volume, other: Volume) -> None:
    """DataError naming ``other``'s file if its grid differs from the image's."""
    problem = grid_mismatch(other.shape, other.affine, image.shape, image.affine)
    if problem is not None:
        raise DataError(other.path or Path("<array>"), problem)
