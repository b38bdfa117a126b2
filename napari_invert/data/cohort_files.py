"""What a cohort folder holds on disk, before any subject is built.

Subject IDs of NIfTI file names, listing and matching the files of a folder, reading a
demographics CSV or a YAML file, comparing affines, and guessing a folder's layout
(:func:`detect_kind`). Everything reported as a :class:`Problem` (file, phrase) or raised
as :class:`~napari_invert.errors.DataError`; nothing is skipped silently.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from napari_invert.errors import DataError

COHORT_KINDS: tuple[str, ...] = ("auto", "lpba40", "ixi", "folder", "manifest", "demo")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

#: Image and label/mask affines may differ by this much (mm, per affine entry).
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cohort: the file (or folder) and a short phrase."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def to_error(self) -> DataError:
        return DataError(self.path, self.problem)


def nifti_id(path: Path) -> str | None:
    """Subject ID of a NIfTI file name (``S01.nii.gz`` -> ``S01``), ``None`` if not NIfTI."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def list_nifti_folder(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    """NIfTI files of ``folder`` by ID, plus problems (duplicates, non-NIfTI files).

    Hidden files (``.name``, e.g. temporary files of atomic writers) are ignored.
    """
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        sid = nifti_id(p)
        if sid is None or not p.is_file():
            problems.append(Problem(p, "not a NIfTI file (.nii or .nii.gz); not used"))
        elif sid in found:
            problems.append(Problem(p, f"duplicate subject ID {sid!r} (also {found[sid].name})"))
        else:
            found[sid] = p
    return found, problems


def match_to_ids(folder: Path, ids: list[str], what: str) -> tuple[dict[str, Path], list[Problem]]:
    """Files of ``folder`` for each ID (missing ones get the expected ``.nii.gz`` path, so
    validation reports them) and problems for files that match no image."""
    files, problems = list_nifti_folder(folder)
    known = set(ids)
    for sid, p in files.items():
        if sid not in known:
            problems.append(Problem(p, f"{what} file has no matching image"))
    return {sid: files.get(sid, folder / f"{sid}.nii.gz") for sid in ids}, problems


def convert_cell(value: str | None) -> Any:
    """CSV cell -> float when numeric, ``None`` when empty, else the stripped string."""
    if value is None:
        return None
    text = value.strip()
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_demographics(path: Path) -> dict[str, dict[str, Any]]:
    """``{ID: {column: value}}`` from a CSV whose first column is the subject ID."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"unreadable demographics CSV ({exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or len(rows[0]) < 1:
        raise DataError(path, "empty demographics CSV")
    header = [h.strip() for h in rows[0]]
    out: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(path, f"line {i}: {len(row)} columns, header has {len(header)}")
        sid = row[0].strip()
        if sid in out:
            raise DataError(path, f"line {i}: duplicate subject ID {sid!r}")
        out[sid] = {h: convert_cell(c) for h, c in zip(header[1:], row[1:])}
    return out


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None


def format_shape(shape: tuple[int, ...]) -> str:
    """``(160, 192, 160)`` -> ``"160x192x160"``."""
    return "x".join(str(s) for s in shape)


def grid_mismatch(
    shape: tuple[int, ...], affine: np.ndarray, image_shape: tuple[int, ...], image_affine: np.ndarray
) -> str | None:
    """Why a label/mask grid (``shape``, 4x4 ``affine`` in mm) does not fit the image's, or
    ``None`` when shapes are equal and affines agree within :data:`AFFINE_TOLERANCE_MM`."""
    if shape != image_shape:
        return f"shape {format_shape(shape)} differs from the image's {format_shape(image_shape)}"
    if not np.allclose(affine, image_affine, atol=AFFINE_TOLERANCE_MM, rtol=0):
        diff = float(np.abs(affine - image_affine).max())
        return f"affine differs from the image's (by up to {diff:.3g} mm)"
    return None


def detect_kind(path: Path) -> str:
    """Guess the layout of ``path``: manifest file, ixi (``t1/``), lpba40 (``images/S01``
    style with ``labels/`` and no ``cohort.yaml``/``masks/``) or generic folder."""
    if path.is_file():
        if path.suffix.lower() in (".csv", ".yaml", ".yml"):
            return "manifest"
        raise DataError(path, "not a cohort (expected a folder or a .csv/.yaml manifest)")
    if (path / "images").is_dir():
        ids = [nifti_id(p) for p in (path / "images").iterdir() if not p.name.startswith(".")]
        lpba_like = (
            (path / "labels").is_dir()
            and not (path / "masks").exists()
            and not (path / "cohort.yaml").exists()
            and bool(ids)
            and all(i is not None and re.fullmatch(r"S\d+", i) for i in ids)
        )
        return "lpba40" if lpba_like else "folder"
    if (path / "t1").is_dir():
        return "ixi"
    for name in ("manifest.csv", "manifest.yaml", "manifest.yml"):
        if (path / name).is_file():
            return "manifest"
    raise DataError(path, "unrecognised cohort layout (expected images/, t1/ or a manifest)")
