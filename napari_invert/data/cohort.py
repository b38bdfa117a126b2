"""Cohorts of subjects on disk: built-in layouts, a generic folder layout, manifests.

Layouts read by :meth:`Cohort.from_path`:

* ``lpba40``: ``images/S01.nii.gz ...`` and ``labels/`` (56 structures); skull-stripped;
  brain mask ``image > 0``. Pitfall: the cerebellum (181) and most of the brainstem (182)
  are labelled but lie outside the image (see ``label_mode`` in
  :func:`napari_invert.data.prepare.prepare_cohort`). Second pitfall: the headers carry
  the ITK default direction (axcodes L,P,S), while the anatomy in array order is R,A,S
  (frontal lobe at high y index; odd "L" labels at low x index); the study treats the
  header as the truth, so displayed volumes are mirrored left-right and front-back.
* ``ixi``: ``t1/<ID>.nii.gz`` full-head and ``labels/`` (DLMUSE, automated); brain mask
  ``label > 0``; ``demographics.csv`` with ``MRID,Age,Sex``.
* ``folder`` (generic): ``images/<ID>.nii[.gz]``; optional ``labels/<ID>``,
  ``masks/<ID>``, ``demographics.csv`` (first column = ID) and ``cohort.yaml`` with
  ``name``, ``skull_stripped: bool``, ``label_names: {value: name}`` and ``mask_rule``.
  Defaults: with ``masks/`` the mask is that file and the images are taken as full-head;
  without it the mask is ``image > 0`` and the images are taken as skull-stripped.
* ``manifest``: a CSV (``subject_id,image[,label][,mask][,other columns...]``) or YAML
  file (a list of such rows, or a mapping with ``subjects:`` plus the ``cohort.yaml``
  keys) whose paths are relative to the manifest; extra columns become demographics.

Nothing is skipped silently: files that do not fit the layout (a label without image, a
subject without the label file the others have, a non-NIfTI file in ``images/``) are
reported by :meth:`Cohort.validate` / :meth:`Cohort.problems`.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from napari_invert.data.labels import LPBA40_NAMES, LabelTable, parse_label_names
from napari_invert.data.nifti import Volume, load_nifti, read_header
from napari_invert.errors import DataError

MaskRule = Literal["file", "image>0", "label>0"]
MASK_RULES: tuple[str, ...] = ("file", "image>0", "label>0")
VARIANTS: tuple[str, ...] = ("skull_stripped", "full_head")
COHORT_KINDS: tuple[str, ...] = ("auto", "lpba40", "ixi", "folder", "manifest", "demo")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")

#: Image and label/mask affines may differ by this much (mm, per affine entry).
AFFINE_TOLERANCE_MM = 1e-3


# -- small helpers ------------------------------------------------------------------------
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


def _list_folder(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
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


def _match(folder: Path, ids: list[str], what: str) -> tuple[dict[str, Path], list[Problem]]:
    """Files of ``folder`` for each ID (missing ones get the expected ``.nii.gz`` path, so
    validation reports them) and problems for files that match no image."""
    files, problems = _list_folder(folder)
    known = set(ids)
    for sid, p in files.items():
        if sid not in known:
            problems.append(Problem(p, f"{what} file has no matching image"))
    return {sid: files.get(sid, folder / f"{sid}.nii.gz") for sid in ids}, problems


def _convert(value: str | None) -> Any:
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
        out[sid] = {h: _convert(c) for h, c in zip(header[1:], row[1:])}
    return out


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None


def _same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, atol=AFFINE_TOLERANCE_MM, rtol=0))


# -- subjects ------------------------------------------------------------------------------
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
    path = other.path or Path("<array>")
    if other.shape != image.shape:
        raise DataError(path, f"shape {_fmt(other.shape)} differs from the image's {_fmt(image.shape)}")
    if not _same_affine(other.affine, image.affine):
        diff = float(np.abs(other.affine - image.affine).max())
        raise DataError(path, f"affine differs from the image's (by up to {diff:.3g} mm)")


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


# -- cohorts -------------------------------------------------------------------------------
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
        out: list[Problem] = []

        def add(p: Problem) -> bool:
            out.append(p)
            return stop_at_first

        if not self.subjects:
            add(Problem(self.root, "no subjects found"))
            return out
        for p in self.layout_problems:
            if add(p):
                return out
        for sid, n in Counter(self.subject_ids).items():
            if n > 1 and add(Problem(self.root, f"subject ID {sid!r} appears {n} times")):
                return out
        with_labels = sum(s.label_path is not None for s in self.subjects)
        with_masks = sum(s.mask_path is not None for s in self.subjects if s.mask_rule == "file")
        for s in self.subjects:
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
        table = LabelTable.from_names(self.label_names) if self.label_names else None
        for s in self.subjects:
            for p in self._subject_problems(s, full, table):
                if add(p):
                    return out
        return out

    def _subject_problems(self, s: Subject, full: bool, table: LabelTable | None) -> list[Problem]:
        """Header checks of one subject (and, if ``full``, voxel checks)."""
        out: list[Problem] = []
        try:
            shape, affine = read_header(s.image_path)
        except DataError as exc:
            return [Problem(exc.path, exc.problem)]
        if len(shape) != 3:
            return [Problem(s.image_path, f"not a 3D volume (shape {_fmt(shape)})")]
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
            if oshape != shape:
                out.append(Problem(path, f"shape {_fmt(oshape)} differs from the image's {_fmt(shape)}"))
                headers_ok = False
            elif not _same_affine(oaffine, affine):
                diff = float(np.abs(oaffine - affine).max())
                out.append(Problem(path, f"affine differs from the image's (by up to {diff:.3g} mm)"))
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

    # construction ------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: str | Path, kind: str = "auto", n_subjects: int | None = None) -> Cohort:
        """Read a cohort from a folder or manifest file (see the module docstring).

        ``kind``: ``auto`` (detect), ``lpba40``, ``ixi``, ``folder`` (``demo`` is a
        folder), ``manifest``. ``n_subjects``: keep the first N subjects (sorted by ID for
        folders, file order for manifests). Only the layout is read here; call
        :meth:`validate` to check the files.
        """
        path = Path(path).expanduser()
        if kind not in COHORT_KINDS:
            raise ValueError(f"kind must be one of {COHORT_KINDS}, got {kind!r}")
        if not path.exists():
            raise DataError(path, "cohort path not found")
        if kind == "auto":
            kind = detect_kind(path)
        if kind == "demo":
            kind = "folder"
        if kind == "manifest":
            cohort = _from_manifest(path)
        else:
            if not path.is_dir():
                raise DataError(path, f"a '{kind}' cohort must be a folder")
            cohort = {"lpba40": _from_lpba40, "ixi": _from_ixi, "folder": _from_folder}[kind](path)
        if n_subjects is not None:
            cohort = cohort.head(n_subjects)
        return cohort


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


def _images(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    images, problems = _list_folder(folder)
    if not images:
        raise DataError(folder, "no NIfTI images (.nii or .nii.gz) found")
    return images, problems


def _from_lpba40(root: Path) -> Cohort:
    images, problems = _images(root / "images")
    if not (root / "labels").is_dir():
        raise DataError(root / "labels", "folder not found (LPBA40 needs its label maps)")
    ids = sorted(images)
    labels, lp = _match(root / "labels", ids, "label")
    subjects = [
        Subject(sid, images[sid], labels[sid], None, skull_stripped=True, mask_rule="image>0") for sid in ids
    ]
    return Cohort(
        "lpba40",
        subjects,
        root,
        kind="lpba40",
        label_names=dict(LPBA40_NAMES),
        layout_problems=problems + lp,
    )


def _from_ixi(root: Path) -> Cohort:
    images, problems = _images(root / "t1")
    if not (root / "labels").is_dir():
        raise DataError(root / "labels", "folder not found (the IXI brain mask is label > 0)")
    ids = sorted(images)
    labels, lp = _match(root / "labels", ids, "label")
    demo_path = root / "demographics.csv"
    demo = read_demographics(demo_path) if demo_path.is_file() else {}
    subjects = [
        Subject(
            sid,
            images[sid],
            labels[sid],
            None,
            skull_stripped=False,
            mask_rule="label>0",
            demographics=dict(demo.get(sid, {})),
        )
        for sid in ids
    ]
    return Cohort(root.name, subjects, root, kind="ixi", layout_problems=problems + lp)


_COHORT_YAML_KEYS = ("name", "skull_stripped", "label_names", "mask_rule")


def _cohort_options(data: Any, source: Path) -> dict[str, Any]:
    """Validated ``name``, ``skull_stripped``, ``label_names``, ``mask_rule`` (others kept
    under ``"extra"``)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(source, "expected a mapping of cohort options")
    known = (*_COHORT_YAML_KEYS, "subjects")
    out: dict[str, Any] = {"extra": {k: v for k, v in data.items() if k not in known}}
    if "name" in data:
        out["name"] = str(data["name"])
    if "skull_stripped" in data:
        if not isinstance(data["skull_stripped"], bool):
            raise DataError(source, "skull_stripped must be true or false")
        out["skull_stripped"] = data["skull_stripped"]
    if data.get("label_names") is not None:
        try:
            out["label_names"] = parse_label_names(data["label_names"])
        except ValueError as exc:
            raise DataError(source, str(exc)) from None
    if "mask_rule" in data:
        if data["mask_rule"] not in MASK_RULES:
            raise DataError(source, f"mask_rule must be one of {', '.join(MASK_RULES)}")
        out["mask_rule"] = data["mask_rule"]
    return out


def _from_folder(root: Path) -> Cohort:
    images, problems = _images(root / "images")
    ids = sorted(images)
    opts = (
        _cohort_options(_read_yaml(root / "cohort.yaml"), root / "cohort.yaml")
        if (root / "cohort.yaml").is_file()
        else {}
    )
    labels: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    if (root / "labels").is_dir():
        labels, lp = _match(root / "labels", ids, "label")
        problems += lp
    if (root / "masks").is_dir():
        masks, mp = _match(root / "masks", ids, "mask")
        problems += mp
    mask_rule = opts.get("mask_rule", "file" if masks else "image>0")
    if mask_rule == "file" and not masks:
        raise DataError(root / "masks", "folder not found (cohort.yaml says mask_rule: file)")
    skull_stripped = opts.get("skull_stripped", mask_rule == "image>0")
    demo_path = root / "demographics.csv"
    demo = read_demographics(demo_path) if demo_path.is_file() else {}
    subjects = [
        Subject(
            sid,
            images[sid],
            labels.get(sid),
            masks.get(sid),
            skull_stripped=skull_stripped,
            mask_rule=mask_rule,
            demographics=dict(demo.get(sid, {})),
        )
        for sid in ids
    ]
    return Cohort(
        opts.get("name", root.name),
        subjects,
        root,
        kind="folder",
        label_names=opts.get("label_names"),
        layout_problems=problems,
        metadata=opts.get("extra", {}),
    )


def _manifest_rows(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows (dicts) and cohort options of a CSV or YAML manifest."""
    if path.suffix.lower() == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                rows = [
                    {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k}
                    for r in reader
                ]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(path, f"unreadable manifest CSV ({exc})") from None
        return rows, {}
    data = _read_yaml(path)
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict) and isinstance(data.get("subjects"), list):
        return data["subjects"], _cohort_options(data, path)
    raise DataError(path, "manifest YAML must be a list of subjects or have a 'subjects' list")


def _from_manifest(path: Path) -> Cohort:
    if path.is_dir():
        for name in ("manifest.csv", "manifest.yaml", "manifest.yml"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise DataError(path, "no manifest.csv or manifest.yaml in this folder")
    rows, opts = _manifest_rows(path)
    if not rows:
        raise DataError(path, "manifest lists no subjects")
    base = path.parent

    def resolve(value: Any) -> Path | None:
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else base / p

    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(path, f"subject entry {i} is not a mapping")
        for key in ("subject_id", "image"):
            if row.get(key) in (None, ""):
                raise DataError(path, f"subject entry {i}: missing '{key}'")
    has_mask = any(resolve(r.get("mask")) is not None for r in rows)
    mask_rule = opts.get("mask_rule", "file" if has_mask else "image>0")
    skull_stripped = opts.get("skull_stripped", mask_rule == "image>0")
    subjects = []
    for row in rows:
        demo = dict(row.get("demographics") or {})
        for k, v in row.items():
            if k not in ("subject_id", "image", "label", "mask", "demographics"):
                demo[k] = _convert(v) if isinstance(v, str) else v
        subjects.append(
            Subject(
                str(row["subject_id"]),
                resolve(row["image"]),  # type: ignore[arg-type]
                resolve(row.get("label")),
                resolve(row.get("mask")),
                skull_stripped=skull_stripped,
                mask_rule=mask_rule,
                demographics=demo,
            )
        )
    return Cohort(
        opts.get("name", path.stem),
        subjects,
        base,
        kind="manifest",
        label_names=opts.get("label_names"),
        metadata={"manifest": str(path), **opts.get("extra", {})},
    )
