"""Validation of a cohort: layout, file existence, headers and (optionally) voxels.

:func:`cohort_problems` backs :meth:`Cohort.validate <napari_invert.data.cohort.Cohort.validate>`
and :meth:`Cohort.problems <napari_invert.data.cohort.Cohort.problems>`; every problem names
its file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from napari_invert.data.cohort_files import Problem, format_shape, grid_mismatch
from napari_invert.data.labels import LabelTable
from napari_invert.data.nifti import Volume, load_nifti, read_header
from napari_invert.data.subject import Subject
from napari_invert.errors import DataError

if TYPE_CHECKING:
    from napari_invert.data.cohort import Cohort


def cohort_problems(cohort: Cohort, full: bool = False, stop_at_first: bool = False) -> list[Problem]:
    """Every problem of ``cohort`` (see :meth:`Cohort.validate`), without raising.

    ``full``: also read every voxel; ``stop_at_first``: return after the first problem.
    """
    out: list[Problem] = []

    def add(p: Problem) -> bool:
        out.append(p)
        return stop_at_first

    if not cohort.subjects:
        add(Problem(cohort.root, "no subjects found"))
        return out
    for p in cohort.layout_problems:
        if add(p):
            return out
    for sid, n in Counter(cohort.subject_ids).items():
        if n > 1 and add(Problem(cohort.root, f"subject ID {sid!r} appears {n} times")):
            return out
    with_labels = sum(s.label_path is not None for s in cohort.subjects)
    with_masks = sum(s.mask_path is not None for s in cohort.subjects if s.mask_rule == "file")
    for s in cohort.subjects:
        if with_labels > 0 and s.label_path is None:
            msg = "no label file (other subjects have one)"
            if add(Problem(s.image_path, msg)):
                return out
        if s.mask_rule == "file" and s.mask_path is None:
            msg = "no mask file" + (" (other subjects have one)" if with_masks else "")
            if add(Problem(s.image_path, msg)):
                return out
        no_labels = s.mask_rule == "label>0" and s.label_path is None and with_labels == 0
        if no_labels and add(Problem(s.image_path, "mask rule 'label>0' but no label file")):
            return out
    table = LabelTable.from_names(cohort.label_names) if cohort.label_names else None
    for s in cohort.subjects:
        for p in subject_problems(s, full, table):
            if add(p):
                return out
    return out


def subject_problems(s: Subject, full: bool, table: LabelTable | None) -> list[Problem]:
    """Header checks of one subject (and, if ``full``, voxel checks)."""
    out: list[Problem] = []
    try:
        shape, affine = read_header(s.image_path)
    except DataError as exc:
        return [Problem(exc.path, exc.problem)]
    if len(shape) != 3:
        return [Problem(s.image_path, f"not a 3D volume (shape {format_shape(shape)})")]
    others = [(p, kind) for p, kind in ((s.label_path, "label"), (s.mask_path, "mask")) if p is not None]
    if s.mask_rule != "file":
        others = [(p, k) for p, k in others if k != "mask"]
    headers_ok = True
    for path, _kind in others:
        try:
            oshape, oaffine = read_header(path)
        except DataError as exc:
            out.append(Problem(exc.path, exc.problem))
            headers_ok = False
            continue
        problem = grid_mismatch(oshape, oaffine, shape, affine)
        if problem is not None:
            out.append(Problem(path, problem))
            headers_ok = False
    if not full or not headers_ok:
        return out

    # voxel-level checks: every file on its own, each read once
    def attempt(fn: Callable[[], Volume | None]) -> Volume | None:
        try:
            return fn()
        except DataError as exc:
            out.append(Problem(exc.path, exc.problem))
            return None

    image = attempt(s.load_image)
    labels = attempt(s.load_labels) if s.label_path is not None else None
    if labels is not None and table is not None:
        unknown = table.unknown_values(labels.array)
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            out.append(Problem(s.label_path, f"unknown label values {shown}"))  # type: ignore[arg-type]
    if s.mask_rule == "file" and s.mask_path is not None:
        attempt(lambda: load_nifti(s.mask_path, "mask"))  # type: ignore[arg-type]
    elif s.mask_rule == "image>0" and image is not None:
        attempt(lambda: s._mask_from(image, None))
    elif s.mask_rule == "label>0" and labels is not None:
        attempt(lambda: s._mask_from(image or labels, labels))
    return out
