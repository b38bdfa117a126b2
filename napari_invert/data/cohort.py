"""Cohorts of subjects on disk: the :class:`Cohort` type.

A cohort is an ordered list of :class:`~napari_invert.data.subject.Subject` plus what is
known about the whole set (name, root, declared label names, layout problems). Where the
rest lives:

* :mod:`napari_invert.data.cohort_layouts`: the layouts :meth:`Cohort.from_path` reads
  (``lpba40``, ``ixi``, generic ``folder``, ``manifest``) and their pitfalls;
* :mod:`napari_invert.data.cohort_check`: :meth:`Cohort.validate` / :meth:`Cohort.problems`;
* :mod:`napari_invert.data.subject`: one subject's files, mask rule and volumes;
* :mod:`napari_invert.data.cohort_files`: IDs of NIfTI files, folder listing, demographics
  CSV, layout detection.

Their public names are re-exported here, so ``from napari_invert.data.cohort import
Subject`` keeps working. Nothing is skipped silently: files that do not fit the layout are
reported by :meth:`Cohort.validate` / :meth:`Cohort.problems`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from napari_invert.data.cohort_check import cohort_problems
from napari_invert.data.cohort_files import (
    AFFINE_TOLERANCE_MM,
    COHORT_KINDS,
    NIFTI_SUFFIXES,
    Problem,
    detect_kind,
    nifti_id,
    read_demographics,
)
from napari_invert.data.labels import LabelTable
from napari_invert.data.subject import MASK_RULES, VARIANTS, MaskRule, Subject, SubjectVolumes
from napari_invert.errors import DataError

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "COHORT_KINDS",
    "MASK_RULES",
    "NIFTI_SUFFIXES",
    "VARIANTS",
    "Cohort",
    "MaskRule",
    "Problem",
    "Subject",
    "SubjectVolumes",
    "detect_kind",
    "nifti_id",
    "read_demographics",
]


@dataclass(eq=False)
class Cohort:
    """An ordered list of subjects plus what is known about the whole set.

    Positional order as in ``docs/ARCHITECTURE.md``: ``Cohort(name, subjects, root)``
    (``Cohort(name, root, subjects)`` is recognised and accepted too).
    ``label_names``: declared ``{value: name}`` (LPBA40, ``cohort.yaml``); when given,
    label values outside it are problems. ``layout_problems``: files found on disk that
    do not fit the layout (reported by :meth:`problems`).
    """

    name: str
    subjects: list[Subject]
    root: Path
    kind: str = "folder"
    label_names: dict[int, str] | None = None
    layout_problems: list[Problem] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.subjects, (str, Path)) and isinstance(self.root, (list, tuple)):
            self.subjects, self.root = list(self.root), self.subjects  # type: ignore[assignment]
        self.subjects = list(self.subjects)
        self.root = Path(self.root)
        self._label_table: LabelTable | None = None

    # container behaviour -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects)

    def __getitem__(self, key: int | str) -> Subject:
        if isinstance(key, str):
            for s in self.subjects:
                if s.subject_id == key:
                    return s
            raise KeyError(f"no subject {key!r} in cohort {self.name!r}")
        return self.subjects[key]

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self.subjects]

    @property
    def skull_stripped(self) -> bool:
        """True when every subject's image is skull-stripped (no full-head variant)."""
        return bool(self.subjects) and all(s.skull_stripped for s in self.subjects)

    @property
    def has_labels(self) -> bool:
        """True when at least one subject has a label file."""
        return any(s.label_path is not None for s in self.subjects)

    def variants(self) -> list[str]:
        """Image variants available: ``skull_stripped`` always, ``full_head`` with skulls."""
        return ["skull_stripped"] if self.skull_stripped else ["skull_stripped", "full_head"]

    def head(self, n_subjects: int) -> Cohort:
        """The first ``n_subjects`` subjects (DataError if the cohort has fewer)."""
        if n_subjects < 1:
            raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
        if n_subjects > len(self.subjects):
            raise DataError(
                self.root, f"{n_subjects} subjects requested, the cohort has {len(self.subjects)}"
            )
        return replace(self, subjects=self.subjects[:n_subjects])

    def label_table(self) -> LabelTable:
        """The cohort's :class:`LabelTable`: the declared names, else the union of the
        values in every label file (reads them all once, then cached)."""
        if self._label_table is None:
            if self.label_names:
                self._label_table = LabelTable.from_names(self.label_names)
            else:
                arrays = (v.array for v in (s.load_labels() for s in self.subjects) if v is not None)
                self._label_table = LabelTable.from_arrays(arrays)
        return self._label_table

    # validation --------------------------------------------------------------------------
    def validate(self, full: bool = False) -> list[Problem]:
        """Check the cohort.

        ``full=False``: layout, file existence and headers (shapes, affines, 3D) of every
        file; the first problem raises :class:`DataError`; returns ``[]`` when all is well.
        ``full=True``: additionally reads every voxel (truncation, NaN/Inf, non-integer
        or unknown label values, empty masks) and returns every problem found.
        """
        problems = self.problems(full=full, stop_at_first=not full)
        if problems and not full:
            raise problems[0].to_error()
        return problems

    def problems(self, full: bool = False, stop_at_first: bool = False) -> list[Problem]:
        """Every problem found (see :meth:`validate`), without raising."""
        return cohort_problems(self, full=full, stop_at_first=stop_at_first)

    # construction ------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path, kind: str = "auto", n_subjects: int | None = None) -> Cohort:
        """Read a cohort from a folder or manifest file (layouts: see
        :mod:`napari_invert.data.cohort_layouts`).

        ``kind``: ``auto`` (detect), ``lpba40``, ``ixi``, ``folder`` (``demo`` is a
        folder), ``manifest``. ``n_subjects``: keep the first N subjects (sorted by ID for
        folders, file order for manifests). Only the layout is read here; call
        :meth:`validate` to check the files.
        """
        # imported here: the loaders build Cohort objects, so they import this module
        from napari_invert.data.cohort_layouts import read_cohort

        return read_cohort(path, kind=kind, n_subjects=n_subjects)
