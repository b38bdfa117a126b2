"""Reading a cohort from disk, one loader per layout.

Layouts read by :func:`read_cohort` (that is, :meth:`Cohort.from_path
<napari_invert.data.cohort.Cohort.from_path>`):

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
from pathlib import Path
from typing import Any

from napari_invert.data.cohort import Cohort
from napari_invert.data.cohort_files import (
    COHORT_KINDS,
    Problem,
    convert_cell,
    detect_kind,
    list_nifti_folder,
    match_to_ids,
    read_demographics,
    read_yaml,
)
from napari_invert.data.labels import LPBA40_NAMES, parse_label_names
from napari_invert.data.subject import MASK_RULES, Subject
from napari_invert.errors import DataError


def read_cohort(path: str | Path, kind: str = "auto", n_subjects: int | None = None) -> Cohort:
    """Read a cohort from a folder or manifest file (see the module docstring); the body
    of :meth:`Cohort.from_path <napari_invert.data.cohort.Cohort.from_path>`.

    ``kind``: ``auto`` (detect), ``lpba40``, ``ixi``, ``folder`` (``demo`` is a
    folder), ``manifest``. ``n_subjects``: keep the first N subjects (sorted by ID for
    folders, file order for manifests). Only the layout is read here; call
    :meth:`Cohort.validate` to check the files.
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


def _images(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    images, problems = list_nifti_folder(folder)
    if not images:
        raise DataError(folder, "no NIfTI images (.nii or .nii.gz) found")
    return images, problems


def _images_and_labels(
    root: Path, image_folder: str, why: str
) -> tuple[list[str], dict[str, Path], dict[str, Path], list[Problem]]:
    """Sorted IDs, images of ``root/image_folder``, their files in the required ``labels/``
    (``why`` it is required goes into the error) and the layout problems of both."""
    images, problems = _images(root / image_folder)
    if not (root / "labels").is_dir():
        raise DataError(root / "labels", f"folder not found ({why})")
    ids = sorted(images)
    labels, lp = match_to_ids(root / "labels", ids, "label")
    return ids, images, labels, problems + lp


def _demographics(root: Path) -> dict[str, dict[str, Any]]:
    """``root/demographics.csv`` by subject ID, ``{}`` when there is none."""
    path = root / "demographics.csv"
    return read_demographics(path) if path.is_file() else {}


def _from_lpba40(root: Path) -> Cohort:
    ids, images, labels, problems = _images_and_labels(root, "images", "LPBA40 needs its label maps")
    subjects = [
        Subject(sid, images[sid], labels[sid], None, skull_stripped=True, mask_rule="image>0") for sid in ids
    ]
    return Cohort(
        "lpba40",
        subjects,
        root,
        kind="lpba40",
        label_names=dict(LPBA40_NAMES),
        layout_problems=problems,
    )


def _from_ixi(root: Path) -> Cohort:
    ids, images, labels, problems = _images_and_labels(root, "t1", "the IXI brain mask is label > 0")
    demo = _demographics(root)
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
    return Cohort(root.name, subjects, root, kind="ixi", layout_problems=problems)


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
        _cohort_options(read_yaml(root / "cohort.yaml"), root / "cohort.yaml")
        if (root / "cohort.yaml").is_file()
        else {}
    )
    labels: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    if (root / "labels").is_dir():
        labels, lp = match_to_ids(root / "labels", ids, "label")
        problems += lp
    if (root / "masks").is_dir():
        masks, mp = match_to_ids(root / "masks", ids, "mask")
        problems += mp
    mask_rule = opts.get("mask_rule", "file" if masks else "image>0")
    if mask_rule == "file" and not masks:
        raise DataError(root / "masks", "folder not found (cohort.yaml says mask_rule: file)")
    skull_stripped = opts.get("skull_stripped", mask_rule == "image>0")
    demo = _demographics(root)
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
    data = read_yaml(path)
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
                demo[k] = convert_cell(v) if isinstance(v, str) else v
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
