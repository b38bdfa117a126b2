"""Small study folders for the GUI tests and ``scripts/render_screenshot.py``.

:func:`make_gui_study` writes a real study folder (NIfTI originals, masks, labels,
reconstructions = blurred originals + noise, cohort.json, splits.json, config.yaml) with
:func:`study_fixtures.make_synthetic_study`, and optionally a fake but well-formed
``evaluation/`` (metrics.csv, similarity matrices + ids, deformation maps) whose numbers
are known, so the tests can check what the widgets display.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from study_fixtures import make_synthetic_study

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert.config import dump_config, load_config
from napari_invert.data.nifti import save_nifti
from napari_invert.report.tables import METRICS_CSV_COLUMNS
from napari_invert.study.layout import StudyFolder, tap_slug
from napari_invert.study.results import Experiment, StudyResults

#: Two experiments, as in the paper: U-Net and SegNet with their richest taps.
GUI_EXPERIMENTS: dict[tuple[str, str], tuple[float, float]] = {
    ("unet", "bottleneck+skips"): (0.6, 0.03),
    ("segnet", "bottleneck+indices"): (1.2, 0.06),
}
GUI_SHAPE = (16, 20, 16)  # divisible by 2**levels = 4; every axis >= 11 for windowed SSIM


def fake_value(metric: str, subject_index: int, experiment_index: int) -> float:
    """The value written to metrics.csv (distinct per subject and experiment)."""
    base = {"ssim": 0.5, "correlation": 0.8, "deformation": 2.0}[metric]
    return round(base + 0.1 * subject_index + 0.01 * experiment_index, 4)


def fake_rank(subject_index: int, experiment_index: int) -> int:
    return 1 + (subject_index + experiment_index) % 2


def make_gui_study(
    root: str | Path,
    n_subjects: int = 3,
    n_folds: int = 2,
    evaluated: bool = False,
    with_segmenters: bool = False,
    deformation: bool = False,
    shape: tuple[int, int, int] = GUI_SHAPE,
    seed: int = 0,
) -> Path:
    """Write a small study into ``root``.

    ``evaluated``: add a fake ``evaluation/``; ``deformation``: the config asks for the
    deformation metric (so the GUI computes deformation maps on demand).
    """
    root = make_synthetic_study(
        root,
        n_subjects=n_subjects,
        n_folds=n_folds,
        shape=shape,
        experiments=GUI_EXPERIMENTS,
        with_segmenters=with_segmenters,
        seed=seed,
    )
    if deformation:
        config_path = StudyFolder(root).config_path
        config = load_config(config_path)
        evaluation = config.evaluation.model_copy(
            update={
                "metrics": [*config.evaluation.metrics, "deformation"],
                "deformation": config.evaluation.deformation.model_copy(update={"mode": "sample"}),
            }
        )
        write_text_atomic(config_path, dump_config(config.model_copy(update={"evaluation": evaluation})))
    if evaluated:
        write_fake_evaluation(root)
    return root


def write_fake_evaluation(root: Path) -> None:
    """metrics.csv, similarity matrices (+ JSON ids) and deformation maps with known values."""
    results = StudyResults(root)
    evaluation = results.folder.evaluation_dir
    ids = results.subject_ids
    experiments = results.experiments()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(METRICS_CSV_COLUMNS)  # the layout evaluate_study writes
    rng = np.random.default_rng(1)
    for e_index, exp in enumerate(experiments):
        for s_index, sid in enumerate(ids):
            for metric in ("ssim", "correlation", "deformation"):
                writer.writerow(
                    [
                        sid,
                        results.fold_of(sid),
                        exp.variant,
                        exp.arch,
                        exp.tap,
                        metric,
                        fake_value(metric, s_index, e_index),
                        "",
                        "",
                        fake_rank(s_index, e_index),
                    ]
                )
        for metric in ("ssim", "correlation"):
            matrix = rng.uniform(0.2, 0.6, size=(len(ids), len(ids)))
            np.fill_diagonal(matrix, 0.9)
            stem = evaluation / f"similarity_{exp.variant}_{exp.arch}_{tap_slug(exp.tap)}_{metric}"
            evaluation.mkdir(parents=True, exist_ok=True)
            np.save(stem.with_suffix(".npy"), matrix)
            write_json_atomic(stem.with_suffix(".json"), {"metric": metric, "rows": ids, "columns": ids})
        for sid in ids:
            magnitude = rng.uniform(0.0, 3.0, size=results.cohort["shape"]).astype(np.float32)
            path = (
                evaluation / "deformation" / f"{exp.variant}_{exp.arch}_{tap_slug(exp.tap)}" / f"{sid}.nii.gz"
            )
            save_nifti(path, magnitude, results.affine)
    write_text_atomic(evaluation / "metrics.csv", buf.getvalue())


def experiment_index(results: StudyResults, experiment: Experiment) -> int:
    return results.experiments().index(experiment)
