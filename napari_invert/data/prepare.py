"""Bring a cohort onto one model grid: the arrays every network of a study sees.

Per subject (native files -> model grid):

1. load image, labels and brain mask (each file once) and check they share one grid;
2. reorient to RAS+ (exact) and resample to ``preprocess.voxel_mm`` (linear for the
   image, linear + threshold 0.5 for the mask, nearest for labels; ``None`` = native);
3. optional N4 bias-field correction (inside the brain mask);
4. skull stripping for the ``skull_stripped`` variant (image x mask);
5. intensity normalisation inside the brain mask: ``percentile`` (``preprocess.
   percentiles`` -> [0, 1], clipped), ``zscore``, ``none`` or ``nyul``. For the
   skull-stripped variant the background is set to exactly 0 afterwards;
6. one common window for all subjects: when ``preprocess.crop_to_mask``, the union
   bounding box (+ :data:`CROP_MARGIN_VOXELS`) of the brain masks for a skull-stripped
   cohort, or of the heads (image > :data:`HEAD_THRESHOLD` x its 99.5th percentile, or
   in the brain mask) for a cohort with full-head images, whatever the variant: a
   brain box would cut off the face and skull the full-head variant is about, and this
   way both variants of a cohort share one grid (shape and affines). Without
   ``crop_to_mask`` the whole resampled grid. The window then grows symmetrically to
   the next multiple of ``multiple_of`` (zero padding);
7. labels -> contiguous classes with one :class:`LabelTable` for the cohort, after
   ``label_mode``:

   * ``restrict_to_mask`` (default): labels outside the brain mask become background,
     and structures left with < 1 % of their voxels (:data:`RESTRICT_MIN_FRACTION`) are
     removed (LPBA40: the cerebellum, 181, goes; the ~18 % of brainstem, 182, inside the
     image stays: 55 structures);
   * ``drop_unseen``: structures with < 50 % of their voxels inside the mask (cohort
     total) are removed (LPBA40: 181 and 182: 54 structures); the others keep all
     their voxels, also outside the mask;
   * ``keep``: labels unchanged, even where the image is blank.

   Fractions are judged on the resampled grids, before the window; the table holds
   the structures kept by the mode that still have voxels on the model grid.

``nyul``: the standardiser is fitted on the cohort passed in. Pass only the subjects
whose intensities the landmarks may be learnt from (e.g. the attacker's own data);
fitting on private subjects leaks their histograms into everyone's images.

Timings measured on the shared 2-core development machine (LPBA40, 40 subjects,
skull_stripped, percentile, multiple_of=16, no N4, no cache): 3 mm -> 64x64x64 in about
8 s of CPU time (8 s wall when the machine was quiet, up to 37 s under load; reading and
decompressing the 1 mm files dominates); 2 mm -> 80x96x80 in about 23 s wall; a cache hit
0.3 s. N4 adds several seconds per subject at 3 mm. Memory: the model-grid arrays of all
subjects are held in RAM (labels int64 by contract): about 2 GB at 1 mm for LPBA40.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from napari_invert._io import atomic_path, read_json, write_json_atomic
from napari_invert.config import PreprocessConfig
from napari_invert.data.cohort import Cohort
from napari_invert.data.geometry import GridRecord, bounding_box, centred_window
from napari_invert.data.intensity import (
    NyulStandardizer,
    n4_correct,
    percentile_scale,
    skull_strip,
    zscore,
)
from napari_invert.data.labels import LabelTable
from napari_invert.data.nifti import voxel_sizes
from napari_invert.errors import DataError

LABEL_MODES: tuple[str, ...] = ("restrict_to_mask", "drop_unseen", "keep")
#: Voxels of margin around the union bounding box of the brain masks.
CROP_MARGIN_VOXELS = 3
#: Head foreground (for the crop window of full-head cohorts): fraction of the 99.5th
#: intensity percentile above which a voxel counts as head.
HEAD_THRESHOLD = 0.05
#: ``drop_unseen`` removes structures with less than this fraction inside the mask.
DROP_UNSEEN_FRACTION = 0.5
#: ``restrict_to_mask`` also removes structures left with less than this fraction of their
#: voxels (remnants along the mask border, e.g. 0.01 % of the LPBA40 cerebellum at 3 mm).
RESTRICT_MIN_FRACTION = 0.01
CACHE_VERSION = 1


@dataclass(eq=False)
class PreparedSubject:
    """One subject on the model grid.

    ``image``: float32 ``(X, Y, Z)`` normalised (percentile: [0, 1]); ``mask``: bool brain
    mask; ``labels``: int64 contiguous classes ``0..C-1`` or ``None``; ``affine``: 4x4
    model-grid voxel -> world (mm); ``native``: the :class:`GridRecord` back to the file.
    """

    subject_id: str
    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray
    native: GridRecord

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    def to_native(self, array: np.ndarray, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Model-grid ``(X, Y, Z)`` array -> (array on the native grid, native affine).

        ``order``: 1 for intensities (linear), 0 for labels/masks (nearest).
        """
        return self.native.to_native(array, order)


@dataclass(eq=False)
class PreparedCohort:
    """All subjects of one variant on one model grid (``shape``, ``affine``).

    ``affine``: the model-grid affine shared by all subjects when ``affine_shared`` (an
    aligned cohort such as LPBA40); otherwise (IXI: one origin per subject) the first
    subject's, and each :attr:`PreparedSubject.affine` is the exact one.
    ``label_table``: original values <-> classes (``None`` without labels).
    ``label_report``: per original value, voxel count and fraction inside the brain mask
    on the resampled grids (before the window and ``label_mode``); ``dropped``: values
    removed by ``label_mode``; ``outside_window``: values with no voxel left on the
    model grid; ``absent``: declared values found in no label map.
    """

    name: str
    variant: str
    subjects: list[PreparedSubject]
    label_table: LabelTable | None
    affine: np.ndarray
    shape: tuple[int, int, int]
    voxel_mm: tuple[float, float, float]
    label_mode: str
    affine_shared: bool = True
    normaliser: dict[str, Any] | None = None
    label_report: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False
    cache_path: Path | None = None

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, key: int | str) -> PreparedSubject:
        if isinstance(key, str):
            for s in self.subjects:
                if s.subject_id == key:
                    return s
            raise KeyError(f"no subject {key!r} in prepared cohort {self.name!r}")
        return self.subjects[key]

    @property
    def subject_ids(self) -> list[str]:
        return [s.subject_id for s in self.subjects]

    @property
    def n_classes(self) -> int:
        """Classes including background (1 without labels)."""
        return self.label_table.n_classes if self.label_table is not None else 1

    def stack_images(self, ids: Sequence[str] | None = None) -> np.ndarray:
        """float32 ``(N, X, Y, Z)`` images of ``ids`` (all subjects by default)."""
        subs = self.subjects if ids is None else [self[i] for i in ids]
        return np.stack([s.image for s in subs])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no voxel data): ids, grid, table, settings, grids."""
        return {
            "name": self.name,
            "variant": self.variant,
            "subject_ids": self.subject_ids,
            "shape": list(self.shape),
            "affine": np.asarray(self.affine).tolist(),
            "affine_shared": self.affine_shared,
            "voxel_mm": list(self.voxel_mm),
            "label_mode": self.label_mode,
            "label_table": None if self.label_table is None else self.label_table.to_dict(),
            "label_report": self.label_report,
            "normaliser": self.normaliser,
            "settings": self.settings,
            "grids": {s.subject_id: s.native.to_dict() for s in self.subjects},
        }


# -- helpers ------------------------------------------------------------------------------
def _small_int(labels: np.ndarray) -> np.ndarray:
    """Labels in the smallest integer dtype that holds them (memory while preparing)."""
    if labels.size == 0:
        return labels.astype(np.uint8)
    lo, hi = int(labels.min()), int(labels.max())
    for dt in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return labels.astype(dt)
    return labels.astype(np.int64)


def _settings(
    preprocess: PreprocessConfig, multiple_of: int, variant: str, label_mode: str, n4: bool
) -> dict[str, Any]:
    return {
        "voxel_mm": preprocess.voxel_mm,
        "crop_to_mask": preprocess.crop_to_mask,
        "crop_margin_voxels": CROP_MARGIN_VOXELS,
        "normalisation": preprocess.normalisation,
        "percentiles": list(preprocess.percentiles),
        "n4": n4,
        "multiple_of": multiple_of,
        "variant": variant,
        "label_mode": label_mode,
    }


def cache_key(cohort: Cohort, settings: dict[str, Any]) -> str:
    """sha256 of every file's path, size and mtime, the subject rules and the settings."""
    files = []
    for s in cohort.subjects:
        entry: list[Any] = [s.subject_id, s.mask_rule, s.skull_stripped]
        for p in s.files:
            st = p.stat()
            entry.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
        files.append(entry)
    doc = {
        "version": CACHE_VERSION,
        "name": cohort.name,
        "label_names": sorted((cohort.label_names or {}).items()),
        "subjects": files,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array, allow_pickle=False)


def _write_cache(folder: Path, key: str, prepared: PreparedCohort) -> None:
    """Arrays as .npy (labels in their smallest dtype), then meta.json as commit marker."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(prepared.subjects):
        _save_array(folder / f"{i:04d}_image.npy", s.image)
        _save_array(folder / f"{i:04d}_mask.npy", s.mask)
        if s.labels is not None:
            _save_array(folder / f"{i:04d}_labels.npy", _small_int(s.labels))
    meta = prepared.to_dict()
    meta["key"] = key
    meta["cache_version"] = CACHE_VERSION
    write_json_atomic(folder / "meta.json", meta)


def _read_cache(folder: Path, key: str) -> PreparedCohort | None:
    """The cached cohort, or ``None`` when absent, stale or damaged (then recomputed)."""
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = read_json(meta_path)
        if meta.get("key") != key or meta.get("cache_version") != CACHE_VERSION:
            return None
        table = None if meta["label_table"] is None else LabelTable.from_dict(meta["label_table"])
        subjects = []
        for i, sid in enumerate(meta["subject_ids"]):
            grid = GridRecord.from_dict(meta["grids"][sid])
            image = np.load(folder / f"{i:04d}_image.npy", allow_pickle=False)
            mask = np.load(folder / f"{i:04d}_mask.npy", allow_pickle=False)
            labels = None
            if table is not None:
                labels = np.load(folder / f"{i:04d}_labels.npy", allow_pickle=False).astype(np.int64)
            if image.shape != tuple(meta["shape"]) or mask.dtype != np.bool_:
                return None
            subjects.append(PreparedSubject(sid, image, mask, labels, grid.affine, grid))
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return None
    return PreparedCohort(
        name=meta["name"],
        variant=meta["variant"],
        subjects=subjects,
        label_table=table,
        affine=np.asarray(meta["affine"], dtype=np.float64),
        shape=tuple(meta["shape"]),  # type: ignore[arg-type]
        voxel_mm=tuple(meta["voxel_mm"]),
        label_mode=meta["label_mode"],  # type: ignore[arg-type]
        affine_shared=bool(meta["affine_shared"]),
        normaliser=meta["normaliser"],
        label_report=meta["label_report"],
        settings=meta["settings"],
        from_cache=True,
        cache_path=folder,
    )


def _normalise(image: np.ndarray, mask: np.ndarray, preprocess: PreprocessConfig, path: Path) -> np.ndarray:
    try:
        if preprocess.normalisation == "percentile":
            low, high = preprocess.percentiles
            return percentile_scale(image, mask, low, high)
        if preprocess.normalisation == "zscore":
            return zscore(image, mask)
    except ValueError as exc:
        raise DataError(path, str(exc)) from None
    return image.astype(np.float32, copy=False)


@dataclass
class _Work:
    """One subject between the per-subject steps and the common window."""

    subject_id: str
    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray | None
    grid: GridRecord
    box: tuple[tuple[int, int, int], tuple[int, int, int]]
    image_path: Path
    label_path: Path | None


# -- the entry point ----------------------------------------------------------------------
def prepare_cohort(
    cohort: Cohort,
    preprocess: PreprocessConfig,
    multiple_of: int,
    variant: str,
    label_mode: str = "restrict_to_mask",
    cache_dir: Path | None = None,
    progress: bool = True,
    n4: bool | None = None,
) -> PreparedCohort:
    """Preprocess every subject of ``cohort`` onto one model grid (see the module docstring).

    ``multiple_of``: every grid size is divisible by it (``pool_size ** levels``).
    ``variant``: ``skull_stripped`` or ``full_head`` (must be in ``cohort.variants()``).
    ``cache_dir``: when given (and ``preprocess.cache``), results are stored under
    ``cache_dir/<sha256 key>/`` and loaded from there on the next identical call.
    ``n4``: overrides ``preprocess.n4`` when not ``None``.

    Raises ``DataError`` (naming the file) for any bad input; nothing is skipped.
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    if variant not in ("skull_stripped", "full_head"):
        raise ValueError(f"variant must be 'skull_stripped' or 'full_head', got {variant!r}")
    if variant not in cohort.variants():
        raise DataError(cohort.root, f"variant '{variant}' unavailable: the images are skull-stripped only")
    use_n4 = preprocess.n4 if n4 is None else bool(n4)
    cohort.validate(full=False)
    settings = _settings(preprocess, multiple_of, variant, label_mode, use_n4)

    cache_folder: Path | None = None
    key = ""
    if cache_dir is not None and preprocess.cache:
        key = cache_key(cohort, settings)
        cache_folder = Path(cache_dir) / key[:24]
        cached = _read_cache(cache_folder, key)
        if cached is not None:
            return cached

    declared = LabelTable.from_names(cohort.label_names) if cohort.label_names else None
    work: list[_Work] = []
    for s in tqdm(cohort.subjects, desc=f"prepare {cohort.name}", unit="subject", disable=not progress):
        vols = s.load()
        grid = GridRecord.plan(vols.image.shape, vols.image.affine, preprocess.voxel_mm)
        image = grid.to_resampled(vols.image.array, order=1)
        mask = grid.to_resampled(vols.mask.array, order=1)
        if not mask.any():
            raise DataError(vols.mask.path or s.image_path, "brain mask vanishes after resampling")
        labels = None
        if vols.labels is not None:
            if declared is not None:
                unknown = declared.unknown_values(vols.labels.array)
                if unknown:
                    shown = ", ".join(str(v) for v in unknown[:10])
                    raise DataError(s.label_path, f"unknown label values {shown}")  # type: ignore[arg-type]
            labels = grid.to_resampled(_small_int(vols.labels.array), order=0)
        del vols
        if cohort.skull_stripped:
            box = bounding_box(mask)
        else:
            head = image > HEAD_THRESHOLD * float(np.percentile(image, 99.5))
            box = bounding_box(head | mask)
        if use_n4:
            spacing = voxel_sizes(grid.resampled_affine)
            try:
                image = n4_correct(np.maximum(image, 0), mask, spacing)
            except ValueError as exc:
                raise DataError(s.image_path, f"N4 failed ({exc})") from None
        if variant == "skull_stripped":
            image = skull_strip(image, mask)
        if preprocess.normalisation != "nyul":
            image = _normalise(image, mask, preprocess, s.image_path)
        work.append(_Work(s.subject_id, image, mask, labels, grid, box, s.image_path, s.label_path))

    normaliser: dict[str, Any] | None = None
    if preprocess.normalisation == "nyul":
        try:
            nyul = NyulStandardizer().fit([w.image for w in work], [w.mask for w in work])
        except ValueError as exc:
            raise DataError(cohort.root, f"Nyul standardisation failed ({exc})") from None
        for w in work:
            try:
                w.image = nyul.transform(w.image, w.mask)
            except ValueError as exc:
                raise DataError(w.image_path, str(exc)) from None
        normaliser = nyul.to_dict()
    elif preprocess.normalisation == "percentile":
        normaliser = {"method": "percentile", "percentiles": list(preprocess.percentiles)}
    else:
        normaliser = {"method": preprocess.normalisation}
    if variant == "skull_stripped":
        for w in work:
            w.image[~w.mask] = 0

    # one window for everyone
    if preprocess.crop_to_mask:
        boxes = [w.box for w in work]
        hi_lim = np.max([w.mask.shape for w in work], axis=0)
        start = np.maximum(np.min([b[0] for b in boxes], axis=0) - CROP_MARGIN_VOXELS, 0)
        stop = np.minimum(np.max([b[1] for b in boxes], axis=0) + CROP_MARGIN_VOXELS, hi_lim)
    else:
        start = np.zeros(3, dtype=int)
        stop = np.max([w.mask.shape for w in work], axis=0)
    offset, shape = centred_window(start.tolist(), stop.tolist(), multiple_of)
    stats = _label_stats(work)  # on the resampled grids, before the window cuts anything
    for w in work:
        w.grid = w.grid.with_window(offset, shape)
        w.image = w.grid.window(w.image)
        w.mask = w.grid.window(w.mask)
        if w.labels is not None:
            w.labels = w.grid.window(w.labels)

    table, report = _label_table(stats, _label_stats(work), label_mode, declared)

    subjects = []
    for w in work:
        labels = None
        if w.labels is not None and table is not None:
            lab = w.labels
            if label_mode == "restrict_to_mask":
                lab = np.where(w.mask, lab, 0).astype(lab.dtype)
            if report["dropped"]:
                lab = np.where(np.isin(lab, report["dropped"]), 0, lab).astype(lab.dtype)
            try:
                labels = table.to_contiguous(lab)
            except ValueError as exc:  # pragma: no cover - table is built from these arrays
                raise DataError(w.label_path or w.image_path, str(exc)) from None
        subjects.append(
            PreparedSubject(
                w.subject_id, w.image.astype(np.float32, copy=False), w.mask, labels, w.grid.affine, w.grid
            )
        )
    work.clear()

    affines = [s.affine for s in subjects]
    shared = all(np.allclose(a, affines[0], atol=1e-4) for a in affines)
    prepared = PreparedCohort(
        name=cohort.name,
        variant=variant,
        subjects=subjects,
        label_table=table,
        affine=affines[0].copy(),
        shape=tuple(int(v) for v in shape),  # type: ignore[arg-type]
        voxel_mm=voxel_sizes(affines[0]),
        label_mode=label_mode,
        affine_shared=shared,
        normaliser=normaliser,
        label_report=report,
        settings=settings,
        cache_path=cache_folder,
    )
    if cache_folder is not None:
        _write_cache(cache_folder, key, prepared)
    return prepared


def _value_counts(labels: np.ndarray) -> dict[int, int]:
    """``{value: voxel count}`` of an integer array (bincount when values are small)."""
    if labels.size == 0:
        return {}
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 1 << 20:
        counts = np.bincount(labels.ravel().astype(np.intp, copy=False))
        nz = np.flatnonzero(counts)
        return dict(zip(nz.tolist(), counts[nz].tolist()))
    vals, counts = np.unique(labels, return_counts=True)
    return dict(zip(vals.tolist(), counts.tolist()))


def _label_stats(work: list[_Work]) -> tuple[dict[int, int], dict[int, int]] | None:
    """Voxel counts per label value over all subjects: ``(total, inside the mask)``."""
    with_labels = [w for w in work if w.labels is not None]
    if not with_labels:
        return None
    total: dict[int, int] = {}
    inside: dict[int, int] = {}
    for w in with_labels:
        for v, c in _value_counts(w.labels).items():  # type: ignore[arg-type]
            total[v] = total.get(v, 0) + c
        for v, c in _value_counts(w.labels[w.mask]).items():  # type: ignore[index]
            inside[v] = inside.get(v, 0) + c
    total.pop(0, None)
    inside.pop(0, None)
    return total, inside


def _label_table(
    stats: tuple[dict[int, int], dict[int, int]] | None,
    windowed: tuple[dict[int, int], dict[int, int]] | None,
    label_mode: str,
    declared: LabelTable | None,
) -> tuple[LabelTable | None, dict[str, Any]]:
    """The cohort's table after ``label_mode`` and the per-value report.

    ``stats``: counts on the resampled grids (fractions inside the mask are judged on
    these); ``windowed``: counts on the model grid (structures with no voxel left there,
    e.g. cut off by the crop window, are not classes).
    """
    if stats is None or windowed is None:
        return None, {}
    total, inside = stats
    fractions = {v: inside.get(v, 0) / n for v, n in total.items()}
    if label_mode == "restrict_to_mask":
        kept = [v for v in total if fractions[v] >= RESTRICT_MIN_FRACTION]
    elif label_mode == "drop_unseen":
        kept = [v for v in total if fractions[v] >= DROP_UNSEEN_FRACTION]
    else:
        kept = list(total)
    dropped = sorted(set(total) - set(kept))
    on_grid = windowed[1] if label_mode == "restrict_to_mask" else windowed[0]
    outside_window = sorted(v for v in kept if on_grid.get(v, 0) == 0)
    kept = [v for v in kept if v not in outside_window]
    names = declared.names if declared is not None else None
    table = LabelTable(tuple(kept), names)
    missing = sorted(set(declared.values) - set(total)) if declared is not None else []
    report = {
        "rule": label_mode,
        "voxels": {str(v): total[v] for v in sorted(total)},
        "fraction_inside_mask": {str(v): round(fractions[v], 4) for v in sorted(total)},
        "dropped": dropped,
        "outside_window": outside_window,
        "absent": missing,
    }
    return table, report
