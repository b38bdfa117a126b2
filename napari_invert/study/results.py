"""Read-only access to a finished (or partly finished) study folder.

Used by the evaluation/report code, the notebooks and the napari widgets alike, so that
none of them re-implements the folder layout (:mod:`napari_invert.study.layout`).
Arrays are returned on the model grid as float32 ``(X, Y, Z)`` (images, reconstructions),
bool (masks) or int64 (labels).

Evaluation outputs (written by ``napari-invert evaluate``, paths from
:class:`~napari_invert.study.layout.EvaluationFolder`):

* :func:`read_metrics` / :class:`MetricsTable`: ``evaluation/metrics.csv`` (long format:
  ``subject_id, variant, arch, tap, metric, value`` plus rank columns, any column whose
  name starts with ``rank``: the rank of the true original, 1 = re-identified).
* :func:`similarity_path` / :func:`load_similarity`: ``evaluation/similarity/<variant>_
  <arch>_<tap>_<metric>.npy`` + ``.json`` (row and column subject ids). Study folders
  evaluated before the grouped layout kept them loose in ``evaluation/``; they are still
  found there.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_invert._io import read_json
from napari_invert.errors import DataError
from napari_invert.study.layout import StudyFolder, tap_from_slug, tap_slug
from napari_invert.threat_models import ARCH_NAMES


@dataclass(frozen=True, order=True)
class Experiment:
    """One attacked configuration: a variant, an architecture and a tap option."""

    variant: str
    arch: str
    tap: str

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``U-Net bottleneck+skips (skull_stripped)``."""
        arch = ARCH_NAMES.get(self.arch, self.arch)
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

    def reconstructed_subjects(self, variant: str) -> set[str]:
        """Subjects with at least one reconstruction of ``variant`` from their private fold
        (a partial study, run on some folds only, has none for the others)."""
        found: set[str] = set()
        for fold in self.splits["folds"]:
            fold_dir = self.root / variant / f"fold{int(fold['fold'])}"
            if not fold_dir.is_dir():
                continue
            for sid in fold["private"]:
                if any(fold_dir.glob(f"*/*/recon/{sid}.nii.gz")):
                    found.add(sid)
        return found

    # -- arrays ----------------------------------------------------------------------
    def original(self, variant: str, subject_id: str) -> np.ndarray:
        return _read_array(self.folder.original(variant, subject_id), np.float32)

    def mask(self, variant: str, subject_id: str) -> np.ndarray:
        return _read_array(self.folder.mask(variant, subject_id), np.float32) > 0

    def labels(self, variant: str, subject_id: str) -> np.ndarray | None:
        path = self.folder.labels(variant, subject_id)
        return _read_array(path, np.int64) if path.is_file() else None

    def majority_baseline_dice(
        self, variant: str, train_ids: Sequence[str], test_ids: Sequence[str], n_classes: int | None = None
    ) -> np.ndarray | None:
        """Mean foreground Dice, one per ``test_ids`` subject, of the majority label map of the
        ``train_ids`` subjects' labels (:func:`napari_invert.metrics.majority_baseline_dice`):
        what a segmenter that ignores the image scores. ``n_classes``: default the largest
        label + 1. None when a list is empty or a label map is missing."""
        from napari_invert.metrics import majority_baseline_dice

        train = [self.labels(variant, s) for s in train_ids]
        test = [self.labels(variant, s) for s in test_ids]
        if not train or not test or any(x is None for x in [*train, *test]):
            return None
        n = n_classes or int(max(int(a.max()) for a in [*train, *test])) + 1
        return majority_baseline_dice(train, test, int(n))

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


# ---------------------------------------------------------------------------------------
# evaluation outputs: metrics.csv and similarity matrices
# ---------------------------------------------------------------------------------------
#: Display order of metric columns; other metrics follow alphabetically.
METRIC_ORDER: tuple[str, ...] = ("ssim", "ssim_global", "correlation", "deformation", "dice")
_BASE_COLUMNS = ("subject_id", "variant", "arch", "tap", "metric", "value")


@dataclass(frozen=True)
class MetricValue:
    """One metric of one reconstruction, with its re-identification rank if known."""

    value: float
    rank: float | None = None

    def text(self) -> str:
        """``0.812`` or ``0.812 (#1)``."""
        shown = "–" if math.isnan(self.value) else f"{self.value:.3f}"
        if self.rank is not None and not math.isnan(self.rank):
            shown += f" (#{int(self.rank)})"
        return shown


def _float_or_none(text: str | None) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def sort_metrics(names: Iterable[str]) -> list[str]:
    """Metric names in :data:`METRIC_ORDER`, then the rest alphabetically."""
    names = set(names)
    known = [m for m in METRIC_ORDER if m in names]
    return known + sorted(names - set(known))


@dataclass
class MetricsTable:
    """Contents of ``evaluation/metrics.csv`` indexed by ``(subject, experiment)``."""

    path: Path
    rows: dict[tuple[str, Experiment], dict[str, MetricValue]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> MetricsTable:
        """Parse the CSV; a missing column or an unreadable file is a :class:`DataError`."""
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                columns = reader.fieldnames or []
                missing = [c for c in _BASE_COLUMNS if c not in columns]
                if missing:
                    raise DataError(path, f"missing column(s) {', '.join(missing)}")
                rank_cols = [c for c in columns if c.lower().startswith("rank")]
                table = cls(path)
                for row in reader:
                    value = _float_or_none(row["value"])
                    ranks = (_float_or_none(row.get(c)) for c in rank_cols)
                    rank = next((r for r in ranks if r is not None), None)
                    tap = tap_from_slug(tap_slug(row["tap"]))
                    key = (row["subject_id"], Experiment(row["variant"], row["arch"], tap))
                    table.rows.setdefault(key, {})[row["metric"]] = MetricValue(
                        float("nan") if value is None else value, rank
                    )
        except OSError as exc:
            raise DataError(path, f"unreadable ({exc.__class__.__name__})") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(path, f"not a valid CSV file ({exc})") from None
        return table

    def lookup(self, subject_id: str, experiment: Experiment) -> dict[str, MetricValue]:
        """Metric name -> value for one reconstruction (empty when not evaluated)."""
        return dict(self.rows.get((subject_id, experiment), {}))

    def metrics(self) -> list[str]:
        """Every metric name present, in display order."""
        return sort_metrics({m for values in self.rows.values() for m in values})

    def has_metric(self, names: Iterable[str]) -> bool:
        wanted = set(names)
        return any(wanted & set(values) for values in self.rows.values())


def metrics_csv_path(folder: StudyFolder) -> Path:
    """``evaluation/metrics.csv`` of a study folder."""
    return folder.evaluation.metrics_csv


def read_metrics(folder: StudyFolder) -> MetricsTable | None:
    """The study's metrics table, or ``None`` when it has not been evaluated."""
    path = metrics_csv_path(folder)
    return MetricsTable.read(path) if path.is_file() else None


def similarity_path(folder: StudyFolder, experiment: Experiment, metric: str) -> Path | None:
    """The stored similarity matrix (``.npy``) of ``experiment`` under ``metric``, if any.

    Looks in ``evaluation/similarity/`` first, then where study folders evaluated before
    the grouped layout kept it (loose in ``evaluation/``).
    """
    e = experiment
    ev = folder.evaluation
    for path in (
        ev.similarity(e.variant, e.arch, e.tap, metric),
        *ev.legacy_similarity(e.variant, e.arch, e.tap, metric),
    ):
        if path.is_file():
            return path
    return None


def stored_similarity_metrics(folder: StudyFolder, experiment: Experiment) -> list[str]:
    """Metrics for which ``experiment`` has a stored similarity matrix.

    Looked up metric by metric: a prefix match would let ``..._bottleneck_`` also claim the
    files of ``..._bottleneck_skips_``.
    """
    return [m for m in METRIC_ORDER if similarity_path(folder, experiment, m) is not None]


def count_similarity_matrices(folder: StudyFolder) -> int:
    """How many reconstruction x candidate matrices ``evaluate`` stored (either layout)."""
    ev = folder.evaluation
    grouped = [p for p in ev.similarity_dir.glob("*.npy") if not p.name.startswith("prior_")]
    return len(grouped) if grouped else len(list(ev.root.glob("similarity_*.npy")))


@dataclass(frozen=True)
class SimilarityMatrix:
    """A similarity matrix with its row (reconstruction) and column (candidate) subject ids."""

    matrix: np.ndarray
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    metric: str
    source: str

    def true_column(self, row: int) -> int | None:
        """Column of the row subject's own original (``None`` if not a candidate)."""
        sid = self.rows[row]
        return self.columns.index(sid) if sid in self.columns else None


def load_similarity(path: Path, subject_ids: Sequence[str], metric: str) -> SimilarityMatrix:
    """Load a stored matrix and its ids (``.json`` beside it, else cohort order)."""
    try:
        matrix = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable .npy ({exc.__class__.__name__})") from None
    meta_path = path.with_suffix(".json")
    rows: Sequence[str] = subject_ids
    columns: Sequence[str] = subject_ids
    if meta_path.is_file():
        meta = read_json(meta_path)
        rows, columns = meta.get("rows", rows), meta.get("columns", columns)
    if matrix.ndim != 2 or matrix.shape != (len(rows), len(columns)):
        raise DataError(path, f"expected a {len(rows)}x{len(columns)} matrix, found shape {matrix.shape}")
    return SimilarityMatrix(matrix, tuple(rows), tuple(columns), metric, path.name)
