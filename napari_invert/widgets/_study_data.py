"""Read-only helpers for study-folder files, for the widgets.

Pure Python + NumPy, no napari/Qt. The metrics.csv reader and the similarity-matrix
lookups live in :mod:`napari_invert.study.results` (re-exported here); every path comes
from :class:`~napari_invert.study.layout.StudyFolder` / ``EvaluationFolder``:

* ``evaluation/metrics.csv``: :class:`MetricsTable`, :func:`read_metrics`;
* ``evaluation/similarity/<variant>_<arch>_<tap>_<metric>.npy`` + ``.json`` (or loose in
  ``evaluation/`` for studies evaluated before the grouped layout): :func:`similarity_path`,
  :func:`load_similarity`;
* ``evaluation/deformation/<variant>_<arch>_<tap>/<ID>.nii.gz``: deformation magnitude
  (mm) of the true pairs, written by ``napari-invert evaluate``;
* ``evaluation/cache/deformation/<variant>_<arch>_<tap>_<recon>[_vs_<ref>].nii.gz``:
  deformation magnitude in mm (model grid) computed and cached by the GUI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari_invert.config import StudyConfig
from napari_invert.study.layout import StudyFolder
from napari_invert.study.results import (  # noqa: F401  (re-exported for the widgets)
    METRIC_ORDER,
    Experiment,
    MetricsTable,
    MetricValue,
    SimilarityMatrix,
    StudyResults,
    load_similarity,
    metrics_csv_path,
    read_metrics,
    similarity_path,
    sort_metrics,
    stored_similarity_metrics,
)

#: Metrics where a higher value means "more similar".
HIGHER_IS_BETTER: dict[str, bool] = {
    "ssim": True,
    "ssim_global": True,
    "correlation": True,
    "deformation": False,
}
DEFORMATION_METRICS = ("deformation", "deformation_norm", "deformation_mean_norm")


def deformation_cache_path(
    folder: StudyFolder, experiment: Experiment, recon_subject: str, ref_subject: str | None = None
) -> Path:
    """Where the GUI caches the deformation magnitude (mm) of ``recon`` -> original ``ref``."""
    e = experiment
    return folder.evaluation.gui_deformation_cache(e.variant, e.arch, e.tap, recon_subject, ref_subject)


def evaluated_deformation_path(folder: StudyFolder, experiment: Experiment, subject_id: str) -> Path:
    """Deformation magnitude of a true pair written by ``napari-invert evaluate``."""
    e = experiment
    return folder.evaluation.deformation_map(e.variant, e.arch, e.tap, subject_id)


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
    evaluation = results.folder.evaluation
    for folder in (evaluation.deformation_dir, evaluation.gui_cache_dir):
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
    """Architectures of the study as on disk (the config's order first), else the config's.

    Folders on disk are the truth: the untrained-victim control (``unet@untrained``) and an
    audit folder's ``user`` / ``user@untrained`` are not in ``config.yaml`` (an audit's
    config lists the default architectures, which it never trained).
    """
    listed = list(config.segmenter.architectures) if config is not None else []
    found: set[str] = set()
    for variant in results.variants:
        for fold_dir in (results.root / variant).glob("fold*"):
            if fold_dir.is_dir():
                found.update(p.name for p in fold_dir.iterdir() if p.is_dir())
    if not found:
        return listed
    return [a for a in listed if a in found] + sorted(found - set(listed))


def segmenter_available(results: StudyResults, variant: str, fold: int, arch: str) -> bool:
    """True when the fold's trained segmenter checkpoint (both files) exists."""
    stem = results.folder.segmenter_stem(variant, fold, arch)
    return stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()


def decoder_available(results: StudyResults, variant: str, fold: int, arch: str, tap: str) -> bool:
    stem = results.folder.decoder_stem(variant, fold, arch, tap)
    return stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()
