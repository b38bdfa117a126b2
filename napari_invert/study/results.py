"""Read-only access to a finished (or partly finished) study folder.

Used by the evaluation/report code, the notebooks and the napari widgets alike, so that
none of them re-implements the folder layout (:mod:`napari_invert.study.layout`).
Arrays are returned on the model grid as float32 ``(X, Y, Z)`` (images, reconstructions),
bool (masks) or int64 (labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_invert.errors import DataError
from napari_invert.study.layout import StudyFolder, tap_from_slug


@dataclass(frozen=True, order=True)
class Experiment:
    """One attacked configuration: a variant, an architecture and a tap option."""

    variant: str
    arch: str
    tap: str

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``U-Net bottleneck+skips (skull_stripped)``."""
        arch = {"unet": "U-Net", "segnet": "SegNet"}.get(self.arch, self.arch)
        return f"{arch} {self.tap} ({self.variant})"


def _read_array(path: Path, dtype: type) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return np.asarray(nib.load(str(path)).dataobj, dtype=dtype)
    except Exception as exc:  # nibabel raises many types for broken files
        raise DataError(path, f"unreadable NIfTI ({exc.__class__.__name__}: {exc})") from None


class StudyResults:
    """Lazy reader of one study folder.

    Parameters
    ----------
    root
        The study folder (must contain ``config.yaml``, ``splits.json``, ``cohort.json``).
    """

    def __init__(self, root: str | Path) -> None:
        self.folder = StudyFolder(Path(root))
        if not self.folder.is_study():
            raise DataError(
                self.folder.root, "not a study folder (config.yaml, splits.json or cohort.json missing)"
            )

    @property
    def root(self) -> Path:
        return self.folder.root

    @cached_property
    def cohort(self) -> dict:
        """Contents of ``cohort.json`` (subject ids, variants, label table, grid)."""
        return self.folder.read_cohort()

    @cached_property
    def splits(self) -> dict:
        """Contents of ``splits.json``."""
        return self.folder.read_splits()

    @property
    def subject_ids(self) -> list[str]:
        return list(self.cohort["subject_ids"])

    @property
    def variants(self) -> list[str]:
        return list(self.cohort["variants"])

    @property
    def affine(self) -> np.ndarray:
        """Model-grid affine (4x4, RAS mm)."""
        return np.asarray(self.cohort["affine"], dtype=float)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Model-grid voxel size in mm."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    def fold_of(self, subject_id: str) -> int:
        """The fold in which ``subject_id`` was private."""
        for fold in self.splits["folds"]:
            if subject_id in fold["private"]:
                return int(fold["fold"])
        raise KeyError(f"{subject_id} is private in no fold")

    def experiments(self) -> list[Experiment]:
        """Every (variant, arch, tap) with at least one reconstruction on disk, sorted."""
        found: set[Experiment] = set()
        for variant in self.variants:
            for fold_dir in sorted((self.root / variant).glob("fold*")):
                for arch_dir in sorted(p for p in fold_dir.iterdir() if p.is_dir()):
                    for tap_dir in sorted(p for p in arch_dir.iterdir() if p.is_dir()):
                        if any((tap_dir / "recon").glob("*.nii.gz")):
                            found.add(Experiment(variant, arch_dir.name, tap_from_slug(tap_dir.name)))
        return sorted(found)

    # -- arrays ----------------------------------------------------------------------
    def original(self, variant: str, subject_id: str) -> np.ndarray:
        return _read_array(self.folder.original(variant, subject_id), np.float32)

    def mask(self, variant: str, subject_id: str) -> np.ndarray:
        return _read_array(self.folder.mask(variant, subject_id), np.float32) > 0

    def labels(self, variant: str, subject_id: str) -> np.ndarray | None:
        path = self.folder.labels(variant, subject_id)
        return _read_array(path, np.int64) if path.is_file() else None

    def prior(self, variant: str, fold: int) -> np.ndarray:
        return _read_array(self.folder.prior(variant, fold), np.float32)

    def recon_path(self, experiment: Experiment, subject_id: str, fold: int | None = None) -> Path:
        """Path of a reconstruction; ``fold`` defaults to the subject's private fold."""
        fold = self.fold_of(subject_id) if fold is None else fold
        return self.folder.recon(experiment.variant, fold, experiment.arch, experiment.tap, subject_id)

    def has_recon(self, experiment: Experiment, subject_id: str) -> bool:
        return self.recon_path(experiment, subject_id).is_file()

    def recon(self, experiment: Experiment, subject_id: str, fold: int | None = None) -> np.ndarray:
        """Reconstruction of ``subject_id`` (from its private fold unless ``fold`` is given)."""
        return _read_array(self.recon_path(experiment, subject_id, fold), np.float32)

    def stack_originals(self, variant: str, subject_ids: list[str] | None = None) -> np.ndarray:
        """Originals stacked as ``(N, X, Y, Z)`` float32."""
        ids = self.subject_ids if subject_ids is None else subject_ids
        return np.stack([self.original(variant, s) for s in ids])

    def stack_masks(self, variant: str, subject_ids: list[str] | None = None) -> np.ndarray:
        ids = self.subject_ids if subject_ids is None else subject_ids
        return np.stack([self.mask(variant, s) for s in ids])
