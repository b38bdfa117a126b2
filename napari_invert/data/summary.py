"""What ``napari-invert data info PATH`` prints: a quick inventory of a cohort.

Shapes, voxel sizes and orientations come from the NIfTI headers only; the number of
labelled structures needs every label map (read raw, no conversion: LPBA40's 40 maps
take a few seconds). ``full_check=True`` also reads every image and reports every
problem (truncated files, NaN, empty masks, unknown labels) instead of the header-level
checks only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import nibabel as nib
import numpy as np

from napari_invert.data.cohort import Cohort
from napari_invert.data.labels import unique_labels
from napari_invert.data.nifti import read_header, voxel_sizes
from napari_invert.errors import DataError


def _num(v: float) -> str:
    """``1.0`` -> ``"1"``, ``0.9375`` -> ``"0.938"``."""
    return f"{v:.3f}".rstrip("0").rstrip(".")


def _counts(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def cohort_summary(cohort: Cohort, full_check: bool = False) -> dict[str, Any]:
    """Inventory of ``cohort`` as a JSON-ready dict.

    Keys: ``name``, ``kind``, ``root``, ``n_subjects``, ``shapes`` / ``voxel_sizes_mm`` /
    ``orientations`` (``{"160x192x160": 40}`` style counts over images), ``n_structures``
    (distinct non-zero label values over all label maps), ``label_values``,
    ``subjects_with_labels``, ``mask_rules``, ``skull_stripped``, ``variants``,
    ``demographics_columns``, ``subjects_with_demographics``, ``problems`` (strings) and
    ``full_check``.
    """
    shapes: Counter[str] = Counter()
    spacings: Counter[str] = Counter()
    orientations: Counter[str] = Counter()
    for s in cohort.subjects:
        try:
            shape, affine = read_header(s.image_path)
        except DataError:
            continue  # reported under problems
        shapes["x".join(str(n) for n in shape)] += 1
        spacings["x".join(_num(v) for v in voxel_sizes(affine))] += 1
        orientations["".join(nib.aff2axcodes(affine))] += 1

    values: set[int] = set()
    with_labels = 0
    for s in cohort.subjects:
        if s.label_path is None or not s.label_path.is_file():
            continue
        try:
            raw = np.asarray(nib.load(str(s.label_path)).dataobj)
        except Exception:  # any read failure is listed under problems
            continue
        with_labels += 1
        if raw.dtype.kind == "f":
            raw = np.rint(raw[np.isfinite(raw)]).astype(np.int64)
        values.update(int(v) for v in unique_labels(raw))
    values.discard(0)

    demo_cols: list[str] = []
    for s in cohort.subjects:
        for k in s.demographics:
            if k not in demo_cols:
                demo_cols.append(k)

    problems = [str(p) for p in cohort.problems(full=full_check)]
    return {
        "name": cohort.name,
        "kind": cohort.kind,
        "root": str(cohort.root),
        "n_subjects": len(cohort.subjects),
        "shapes": _counts(shapes),
        "voxel_sizes_mm": _counts(spacings),
        "orientations": _counts(orientations),
        "n_structures": len(values),
        "label_values": sorted(values),
        "label_names_declared": bool(cohort.label_names),
        "subjects_with_labels": with_labels,
        "mask_rules": _counts(Counter(s.mask_rule for s in cohort.subjects)),
        "skull_stripped": cohort.skull_stripped,
        "variants": cohort.variants(),
        "demographics_columns": demo_cols,
        "subjects_with_demographics": sum(bool(s.demographics) for s in cohort.subjects),
        "problems": problems,
        "full_check": full_check,
    }


def _fmt_counts(counts: dict[str, int]) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{k} ({n})" for k, n in counts.items())


def _fmt_values(values: list[int]) -> str:
    if not values:
        return ""
    if len(values) <= 12:
        return " (values " + ", ".join(str(v) for v in values) + ")"
    return f" (values {values[0]}..{values[-1]})"


def format_cohort_summary(summary: dict[str, Any]) -> str:
    """Human-readable, aligned text of :func:`cohort_summary` for the terminal."""
    n = summary["n_subjects"]
    lines = [
        f"Cohort {summary['name']!r} ({summary['kind']} layout) at {summary['root']}",
        f"  subjects            {n}",
        f"  shapes              {_fmt_counts(summary['shapes'])}",
        f"  voxel size (mm)     {_fmt_counts(summary['voxel_sizes_mm'])}",
        f"  orientation         {_fmt_counts(summary['orientations'])}",
        f"  labelled structures {summary['n_structures']}{_fmt_values(summary['label_values'])}"
        f" in {summary['subjects_with_labels']}/{n} label maps",
        f"  brain mask          {_fmt_counts(summary['mask_rules'])}",
        f"  skull-stripped      {'yes' if summary['skull_stripped'] else 'no'}",
        f"  variants            {', '.join(summary['variants'])}",
    ]
    cols = summary["demographics_columns"]
    if cols:
        lines.append(
            f"  demographics        {', '.join(cols)} ({summary['subjects_with_demographics']}/{n} subjects)"
        )
    else:
        lines.append("  demographics        none")
    check = "every voxel read" if summary["full_check"] else "headers only"
    problems = summary["problems"]
    if problems:
        lines.append(f"  problems            {len(problems)} ({check})")
        lines.extend(f"    - {p}" for p in problems)
    else:
        lines.append(f"  problems            none ({check})")
    return "\n".join(lines)
