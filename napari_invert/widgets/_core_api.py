"""The widgets' single doorway into the core (metrics, identify, attack, models).

Every function here only *calls* the core (imported lazily, inside the function, so the
plugin loads fast and a missing optional piece gives a clear message instead of an
ImportError at napari start-up). No computation lives here; each function is meant to
run inside a thread worker and takes/returns plain arrays.

A core function that is not importable raises :class:`CoreUnavailable` (a
:class:`~napari_invert.errors.NapariInvertError`, shown to the user as one line).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import read_json
from napari_invert.errors import NapariInvertError
from napari_invert.study.results import Experiment, StudyResults
from napari_invert.widgets._plugin_results import has_recon, read_recon
from napari_invert.widgets._study_data import SimilarityMatrix


class CoreUnavailable(NapariInvertError):
    """A core function the GUI needs is not installed/implemented in this version."""


def core_function(module: str, name: str) -> Callable[..., Any]:
    """Import ``module.name`` or raise :class:`CoreUnavailable` naming it."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CoreUnavailable(f"{module}.{name} is not available ({exc.__class__.__name__}: {exc})") from None


def has_core_function(module: str, name: str) -> bool:
    try:
        core_function(module, name)
    except CoreUnavailable:
        return False
    return True


# -- reading a subject ------------------------------------------------------------------
def study_data_range(results: StudyResults, variant: str) -> float:
    """The SSIM ``data_range`` of a variant, as ``napari-invert evaluate`` uses it.

    Read from ``evaluation/summary.json`` when the study was evaluated; otherwise the
    evaluation's convention is applied: max - min of all originals inside their masks
    (one range for every pair, see :mod:`napari_invert.metrics.ssim`).
    """
    summary = results.folder.evaluation_dir / "summary.json"
    if summary.is_file():
        with contextlib.suppress(NapariInvertError, AttributeError, TypeError, ValueError):
            value = float(read_json(summary)["data_range"][variant])
            if np.isfinite(value) and value > 0:
                return value
    lo, hi = np.inf, -np.inf
    for sid in results.subject_ids:
        image, mask = results.original(variant, sid), results.mask(variant, sid)
        inside = image[mask] if mask.any() else image
        lo, hi = min(lo, float(inside.min())), max(hi, float(inside.max()))
    value = hi - lo
    return value if np.isfinite(value) and value > 0 else 1.0


@dataclass
class Cell:
    """One grid cell: a reconstruction of ``recon_subject`` compared with ``ref_subject``."""

    experiment: Experiment
    recon_subject: str
    ref_subject: str


@dataclass
class SubjectView:
    """Arrays for one Compare view (model grid, float32 ``(X, Y, Z)``).

    ``reference``: the original the reconstructions are compared with; ``recons``: one
    per cell, same order; ``scores``: per cell, metric -> value computed on demand when
    the study has no ``metrics.csv`` (empty otherwise); ``data_range``: the study's SSIM
    data range for this variant.
    """

    variant: str
    ref_subject: str
    reference: np.ndarray
    mask: np.ndarray
    cells: list[Cell]
    recons: list[np.ndarray]
    data_range: float
    scores: list[dict[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_view(
    results: StudyResults,
    variant: str,
    ref_subject: str,
    cells: Sequence[Cell],
    compute_scores: bool | Sequence[bool],
    data_range: float | None = None,
) -> SubjectView:
    """Read the reference original, its mask and every cell's reconstruction.

    A missing reconstruction is not fatal: it is recorded in ``problems`` and shown as
    zeros. ``compute_scores``: also compute windowed SSIM and correlation via the core
    (for every cell, or per cell; a cell without scores gets an empty dict).
    ``data_range``: known SSIM range (``None``: :func:`study_data_range`, when needed).
    """
    reference = results.original(variant, ref_subject)
    mask = results.mask(variant, ref_subject)
    recons: list[np.ndarray] = []
    problems: list[str] = []
    for cell in cells:
        try:
            recons.append(read_recon(results, cell.experiment, cell.recon_subject))
        except (NapariInvertError, KeyError) as exc:
            problems.append(str(exc).strip("'\""))
            recons.append(np.zeros_like(reference))
    if data_range is None:
        data_range = study_data_range(results, variant)
    wanted = [compute_scores] * len(cells) if isinstance(compute_scores, bool) else list(compute_scores)
    scores: list[dict[str, float]] = []
    if any(wanted):
        for recon, want in zip(recons, wanted):
            scores.append(quick_scores(reference, recon, mask, data_range) if want else {})
    return SubjectView(
        variant, ref_subject, reference, mask, list(cells), recons, data_range, scores, problems
    )


def quick_scores(
    original: np.ndarray, recon: np.ndarray, mask: np.ndarray, data_range: float
) -> dict[str, float]:
    """Windowed SSIM and Pearson correlation (inside ``mask``) of one pair, via the core.

    Metrics whose core function is missing are left out.
    """
    out: dict[str, float] = {}
    with contextlib.suppress(CoreUnavailable):
        out["ssim"] = ssim_value(original, recon, mask, data_range)
    with contextlib.suppress(CoreUnavailable):
        out["correlation"] = correlation(original, recon, mask)
    return out


# -- metrics ---------------------------------------------------------------------------------
def ssim_map(original: np.ndarray, recon: np.ndarray, data_range: float) -> np.ndarray:
    """Local (windowed) SSIM map ``(X, Y, Z)`` in [-1, 1] of ``recon`` against ``original``."""
    fn = core_function("napari_invert.metrics.ssim", "ssim_map")
    return np.asarray(fn(recon, original, data_range=data_range, device="cpu"), dtype=np.float32)


def ssim_value(original: np.ndarray, recon: np.ndarray, mask: np.ndarray | None, data_range: float) -> float:
    """Mean windowed SSIM inside ``mask`` (the evaluation's ``ssim``)."""
    fn = core_function("napari_invert.metrics.ssim", "ssim_windowed")
    return float(fn(recon, original, data_range=data_range, mask=mask, device="cpu"))


def correlation(original: np.ndarray, recon: np.ndarray, mask: np.ndarray | None) -> float:
    """Pearson correlation of grey values inside ``mask`` (the evaluation's ``correlation``)."""
    fn = core_function("napari_invert.metrics.correlation", "pearson_correlation")
    return float(fn(recon, original, mask=mask))


def deformation_magnitude(
    original: np.ndarray,
    recon: np.ndarray,
    mask: np.ndarray | None,
    spacing: tuple[float, float, float],
    preset: str = "fast",
) -> tuple[np.ndarray, float]:
    """ANTs registration of ``recon`` onto ``original``: (magnitude map in mm, mean norm)."""
    fn = core_function("napari_invert.metrics.deformation", "register_pair")
    result = fn(original, recon, spacing=spacing, preset=preset, mask=mask)
    return np.asarray(result.magnitude, dtype=np.float32), float(result.mean_norm)


def similarity_matrix(
    metric: str,
    recons: Sequence[np.ndarray],
    originals: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    data_range: float,
) -> np.ndarray:
    """``(N, M)`` similarity of reconstructions (rows) to originals (columns) via the core."""
    if metric == "correlation":
        fn = core_function("napari_invert.metrics.correlation", "correlation_matrix")
        return np.asarray(
            fn(list(recons), list(originals), masks=list(masks), device="cpu"), dtype=np.float64
        )
    if metric in ("ssim", "ssim_global"):
        name = "ssim_matrix" if metric == "ssim" else "ssim_global_matrix"
        fn = core_function("napari_invert.metrics.ssim", name)
        return np.asarray(
            fn(list(recons), list(originals), data_range=data_range, masks=list(masks), device="cpu"),
            dtype=np.float64,
        )
    raise CoreUnavailable(f"no on-demand similarity matrix for metric '{metric}'")


def study_similarity_matrix(results: StudyResults, experiment: Experiment, metric: str) -> SimilarityMatrix:
    """Rows: subjects with a reconstruction from their private fold; columns: every subject."""
    columns = results.subject_ids
    rows = [s for s in columns if _has_private_recon(results, experiment, s)]
    if not rows:
        raise NapariInvertError(f"{experiment.label}: no reconstructions from the private folds")
    recons = [read_recon(results, experiment, s) for s in rows]
    originals = [results.original(experiment.variant, s) for s in columns]
    masks = [results.mask(experiment.variant, s) for s in columns]
    data_range = study_data_range(results, experiment.variant)
    matrix = similarity_matrix(metric, recons, originals, masks, data_range)
    return SimilarityMatrix(matrix, tuple(rows), tuple(columns), metric, "computed on demand")


def _has_private_recon(results: StudyResults, experiment: Experiment, subject_id: str) -> bool:
    return has_recon(results, experiment, subject_id)


def ranks_of_truth(similarity: SimilarityMatrix, higher_is_better: bool) -> np.ndarray | None:
    """Rank (1-based) of each row's true original among the candidates, via the core.

    ``None`` when a row's subject is not among the columns.
    """
    fn = core_function("napari_invert.identify", "rank_true")
    true_index = [similarity.true_column(r) for r in range(len(similarity.rows))]
    if any(t is None for t in true_index):
        return None
    return np.asarray(fn(similarity.matrix, np.asarray(true_index), higher_is_better=higher_is_better))


# -- NIfTI -------------------------------------------------------------------------------------
def save_volume(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a NIfTI atomically via the core's writer."""
    fn = core_function("napari_invert.data.nifti", "save_nifti")
    return fn(path, array, affine)


def load_volume(path: Path, kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI via the core's validating reader: ``(array, affine)``."""
    fn = core_function("napari_invert.data.nifti", "load_nifti")
    volume = fn(path, kind=kind)
    return volume.array, volume.affine
