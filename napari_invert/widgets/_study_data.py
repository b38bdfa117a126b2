"""Read-only helpers for study-folder files that :class:`StudyResults` does not cover yet.

Pure Python + NumPy, no napari/Qt: the lead may move these into
:mod:`napari_invert.study.results` / :mod:`napari_invert.study.layout` unchanged.

* ``evaluation/metrics.csv`` (long format, written by ``napari-invert evaluate``):
  ``subject_id, variant, arch, tap, metric, value`` plus rank columns (any column whose
  name starts with ``rank``; the rank of the true original when this metric is used for
  re-identification, 1 = re-identified).
* ``evaluation/similarity_<variant>_<arch>_<tap>_<metric>.npy`` + ``.json``: similarity
  of reconstruction ``i`` (rows) to candidate original ``j`` (columns); the JSON lists
  ``rows`` and ``columns`` subject ids (without it: cohort order, square matrix).
  ``<tap>`` as its slug (the raw tap name is accepted too).
* ``evaluation/deformation/<variant>_<arch>_<tap>/<ID>.nii.gz``: deformation magnitude
  (mm) of the true pairs, written by ``napari-invert evaluate``;
* ``evaluation/cache/deformation/<variant>_<arch>_<tap>_<recon>[_vs_<ref>].nii.gz``:
  deformation magnitude in mm (model grid) computed and cached by the GUI.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_invert._io import read_json
from napari_invert.config import StudyConfig
from napari_invert.errors import DataError
from napari_invert.study.layout import StudyFolder, tap_from_slug, tap_slug
from napari_invert.study.results import Experiment, StudyResults

#: Display order of metric columns; other metrics follow alphabetically.
METRIC_ORDER: tuple[str, ...] = ("ssim", "ssim_global", "correlation", "deformation", "dice")
#: Metrics where a higher value means "more similar".
HIGHER_IS_BETTER: dict[str, bool] = {
    "ssim": True,
    "ssim_global": True,
    "correlation": True,
    "deformation": False,
}
_BASE_COLUMNS = ("subject_id", "variant", "arch", "tap", "metric", "value")
DEFORMATION_METRICS = ("deformation", "deformation_norm", "deformation_mean_norm")


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


def _float(text: str | None) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


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
                    value = _float(row["value"])
                    rank = next((r for r in (_float(row.get(c)) for c in rank_cols) if r is not None), None)
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
        names = {m for values in self.rows.values() for m in values}
        return sort_metrics(names)

    def has_metric(self, names: Iterable[str]) -> bool:
        wanted = set(names)
        return any(wanted & set(values) for values in self.rows.values())


def sort_metrics(names: Iterable[str]) -> list[str]:
    """Metric names in :data:`METRIC_ORDER`, then the rest alphabetically."""
    names = set(names)
    known = [m for m in METRIC_ORDER if m in names]
    return known + sorted(names - set(known))


def metrics_csv_path(folder: StudyFolder) -> Path:
    return folder.evaluation_dir / "metrics.csv"


def read_metrics(folder: StudyFolder) -> MetricsTable | None:
    """The study's metrics table, or ``None`` when it has not been evaluated."""
    path = metrics_csv_path(folder)
    return MetricsTable.read(path) if path.is_file() else None


def similarity_path(folder: StudyFolder, experiment: Experiment, metric: str) -> Path | None:
    """The stored similarity matrix of ``experiment`` under ``metric``, if any."""
    for tap in dict.fromkeys((tap_slug(experiment.tap), experiment.tap)):
        path = folder.evaluation_dir / f"similarity_{experiment.variant}_{experiment.arch}_{tap}_{metric}.npy"
        if path.is_file():
            return path
    return None


def stored_similarity_metrics(folder: StudyFolder, experiment: Experiment) -> list[str]:
    """Metrics for which ``experiment`` has a stored similarity matrix.

    Looked up metric by metric: a prefix match would let ``..._bottleneck_`` also claim the
    files of ``..._bottleneck_skips_``.
    """
    return [m for m in METRIC_ORDER if similarity_path(folder, experiment, m) is not None]


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


def deformation_cache_path(
    folder: StudyFolder, experiment: Experiment, recon_subject: str, ref_subject: str | None = None
) -> Path:
    """Where the GUI caches the deformation magnitude (mm) of ``recon`` -> original ``ref``."""
    name = f"{experiment.variant}_{experiment.arch}_{tap_slug(experiment.tap)}_{recon_subject}"
    if ref_subject is not None and ref_subject != recon_subject:
        name += f"_vs_{ref_subject}"
    return folder.evaluation_dir / "cache" / "deformation" / f"{name}.nii.gz"


def evaluated_deformation_path(folder: StudyFolder, experiment: Experiment, subject_id: str) -> Path:
    """Deformation magnitude of a true pair written by ``napari-invert evaluate``."""
    name = f"{experiment.variant}_{experiment.arch}_{tap_slug(experiment.tap)}"
    return folder.evaluation_dir / "deformation" / name / f"{subject_id}.nii.gz"


def deformation_status(
    results: StudyResults, config: StudyConfig | None, table: MetricsTable | None
) -> tuple[bool, str]:
    """Whether this study has deformation results, and why not.

    Available when ``metrics.csv`` has deformation rows, the evaluation (or the GUI) has
    written deformation maps, or ``config.yaml`` asks for deformation (then maps are
    computed on demand with ANTs).
    """
    if table is not None and table.has_metric(DEFORMATION_METRICS):
        return True, "deformation results found in evaluation/metrics.csv"
    for folder in (results.folder.evaluation_dir / "deformation", results.folder.evaluation_dir / "cache"):
        if folder.is_dir() and any(folder.glob("**/*.nii.gz")):
            return True, f"deformation maps found in {folder.relative_to(results.root)}"
    if (
        config is not None
        and "deformation" in config.evaluation.metrics
        and (config.evaluation.deformation.mode != "off")
    ):
        return True, "config.yaml evaluates deformation (maps are computed on demand)"
    return False, (
        "This study has no deformation results: config.yaml does not evaluate 'deformation' "
        "and evaluation/ holds no deformation rows or maps."
    )


@dataclass(frozen=True)
class FoldInfo:
    """One fold of ``splits.json``."""

    fold: int
    private: tuple[str, ...]
    attack: tuple[str, ...]


def folds_of(results: StudyResults) -> list[FoldInfo]:
    """The folds of the study, sorted by fold number."""
    out = []
    for entry in results.splits["folds"]:
        out.append(
            FoldInfo(int(entry["fold"]), tuple(entry.get("private", [])), tuple(entry.get("attack", [])))
        )
    return sorted(out, key=lambda f: f.fold)


def architectures_of(results: StudyResults, config: StudyConfig | None) -> list[str]:
    """Architectures of the study: from the config, else from the folders on disk."""
    if config is not None:
        return list(config.segmenter.architectures)
    found: set[str] = set()
    for variant in results.variants:
        for fold_dir in (results.root / variant).glob("fold*"):
            found.update(p.name for p in fold_dir.iterdir() if p.is_dir())
    return sorted(found)


def segmenter_available(results: StudyResults, variant: str, fold: int, arch: str) -> bool:
    """True when the fold's trained segmenter checkpoint (both files) exists."""
    stem = results.folder.segmenter_stem(variant, fold, arch)
    return stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()


def decoder_available(results: StudyResults, variant: str, fold: int, arch: str, tap: str) -> bool:
    stem = results.folder.decoder_stem(variant, fold, arch, tap)
    return stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()
