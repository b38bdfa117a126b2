"""Similarity matrices and the re-identification they give.

* :func:`similarity_matrix`: reconstruction (or prior) x candidate original scores, each
  inside the candidate original's mask (correlation, windowed SSIM, global SSIM).
* :func:`identification`: the rank of each row's true original and a JSON-ready summary
  (top-1, top-5, mean rank, chance level, binomial p-value).
* :class:`VariantData` / :func:`load_variant`: the candidates of one variant.
* :func:`save_matrix`: a matrix as ``.npy`` plus ``.json`` of its row / column subject ids,
  at the path :class:`~napari_invert.study.layout.EvaluationFolder` gives.

Ranking rules: undefined scores (NaN / inf) rank as the worst; in a sampled deformation
NaN means "pair not computed" and is left out of the ranking; ties count against the
attacker (pessimistic ties).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import atomic_path, write_json_atomic, write_text_atomic
from napari_invert.errors import DataError
from napari_invert.identify.intervals import binomial_sf
from napari_invert.report.summary import ExperimentEvaluation, finite_mean, finite_sd
from napari_invert.report.tables import METRICS, higher_is_better
from napari_invert.study.results import StudyResults

#: Similarity metrics computed as full reconstruction x candidate matrices.
SIMILARITY_METRICS: tuple[str, ...] = ("correlation", "ssim", "ssim_global")
#: Scoring regions (see :func:`~napari_invert.report.evaluate.evaluate_study`).
REGIONS: tuple[str, ...] = ("mask", "foreground")
#: ``region="foreground"``: voxels above ``min + FOREGROUND_THRESHOLD * data_range``.
FOREGROUND_THRESHOLD = 0.05


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array))
    return path


@dataclass
class VariantData:
    """The candidates of one variant: originals, masks (scoring region), fold priors.

    ``data_range``: the SSIM ``L`` of every pair of the variant (max - min over all
    originals); ``prior_similarity[metric]``: ``(n_folds, N)`` prior x candidate scores.
    """

    variant: str
    candidate_ids: list[str]
    originals: np.ndarray  # (N, X, Y, Z) float32
    masks: np.ndarray  # (N, X, Y, Z) bool
    data_range: float
    folds: list[int]
    priors: np.ndarray  # (n_folds, X, Y, Z)
    prior_similarity: dict[str, np.ndarray] = field(default_factory=dict)  # (n_folds, N)

    def index(self, subject_id: str) -> int:
        return self.candidate_ids.index(subject_id)

    def prior_index(self, fold: int) -> int:
        if fold not in self.folds:
            raise DataError(
                f"{self.variant}/fold{fold}/prior.nii.gz",
                "the attacker's prior (mean image) is missing although the fold has reconstructions",
            )
        return self.folds.index(fold)


def similarity_matrix(
    metric: str,
    queries: np.ndarray,
    originals: np.ndarray,
    masks: np.ndarray,
    data_range: float,
    device: Any = None,
) -> np.ndarray:
    """``(len(queries), len(originals))`` scores, each inside the candidate original's mask."""
    from napari_invert import metrics as M

    if metric == "correlation":
        return np.asarray(M.correlation_matrix(queries, originals, masks=masks, device=device), dtype=float)
    if metric == "ssim":
        return np.asarray(
            M.ssim_matrix(queries, originals, data_range=data_range, masks=masks, device=device), dtype=float
        )
    if metric == "ssim_global":
        return np.asarray(
            M.ssim_global_matrix(queries, originals, data_range=data_range, masks=masks, device=device),
            dtype=float,
        )
    raise ValueError(f"not a similarity metric: {metric}")


def _worst(m: np.ndarray, higher: bool) -> float:
    """A finite score worse than every finite entry of ``m`` (rank_true needs finite truths)."""
    finite = m[np.isfinite(m)]
    if finite.size == 0:
        return 0.0
    return float(finite.min() - 1.0) if higher else float(finite.max() + 1.0)


def _ranking_matrix(matrix: np.ndarray, higher: bool, uncomputed_is_missing: bool) -> np.ndarray:
    """The matrix the ranking sees: undefined scores count as the worst possible.

    Without ``uncomputed_is_missing`` every NaN / inf (an undefined score, e.g. the
    correlation of a constant image) becomes a value worse than all real scores. With it
    (sampled deformation) NaN pairs were never computed and stay NaN, which
    :func:`napari_invert.identify.rank_true` leaves out of the ranking; only a failed
    *true* pair is set to the worst value (see :func:`_identification`). Ties with the worst
    value count against the attacker (pessimistic ties).
    """
    m = np.asarray(matrix, dtype=np.float64)
    worst = _worst(m, higher)
    if not uncomputed_is_missing:
        return np.where(np.isfinite(m), m, worst)
    return np.where(np.isinf(m), worst, m)


def identification(
    matrix: np.ndarray,
    true_index: np.ndarray,
    higher: bool,
    candidates_per_row: int,
    uncomputed_is_missing: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Ranks of the true originals and a JSON-ready re-identification summary.

    ``matrix`` is the raw score matrix (NaN = undefined or not computed); the means and
    SDs are over its finite entries, the ranks come from
    :func:`napari_invert.identify.identification_summary` (pessimistic ties).
    """
    from napari_invert.identify import identification_summary

    raw = np.asarray(matrix, dtype=np.float64)
    rows = np.arange(len(true_index))
    true_nan = ~np.isfinite(raw[rows, true_index])
    ranking = _ranking_matrix(raw, higher, uncomputed_is_missing)
    ranking[rows[true_nan], true_index[true_nan]] = _worst(raw, higher)
    res = identification_summary(ranking, true_index, higher_is_better=higher)
    ranks = np.asarray(res.ranks, dtype=int)
    n = len(ranks)
    top1 = int(np.sum(ranks == 1))
    true = raw[rows, true_index]
    others = raw.copy()
    others[rows, true_index] = np.nan
    others = others[np.isfinite(others)]
    finite_true = true[np.isfinite(true)]
    return ranks, {
        "n_queries": n,
        "n_candidates": int(raw.shape[1]),
        "candidates_per_row": candidates_per_row,
        "top1": top1,
        "top1_rate": top1 / n if n else None,
        "top5": int(np.sum(ranks <= 5)),
        "mean_rank": float(np.mean(ranks)) if n else float("nan"),
        "median_rank": float(np.median(ranks)) if n else float("nan"),
        "chance_top1": 1.0 / candidates_per_row if candidates_per_row else float("nan"),
        "p_value_top1": binomial_sf(top1, n, 1.0 / max(candidates_per_row, 1)),
        "true_mean": finite_mean(finite_true),
        "true_sd": finite_sd(finite_true),
        "other_mean": finite_mean(others),
        "other_sd": finite_sd(others),
        "undefined_true_scores": int(true_nan.sum()),
        "ranks": [int(r) for r in ranks],
        "rank_histogram": [int(c) for c in np.bincount(ranks - 1, minlength=candidates_per_row)],
        "higher_is_better": higher,
    }


def load_variant(results: StudyResults, variant: str, region: str = "mask") -> VariantData:
    """Read every original, mask and existing fold prior of ``variant`` (model grid)."""
    ids = results.subject_ids
    originals = results.stack_originals(variant, ids)
    masks = results.stack_masks(variant, ids)
    for sid, m in zip(ids, masks):
        if not m.any():
            raise DataError(results.folder.mask(variant, sid), "empty brain mask")
    # One SSIM data range for every pair of the variant: max - min of all originals.
    data_range = float(originals.max() - originals.min())
    if not np.isfinite(data_range) or data_range <= 0:
        data_range = 1.0
    if region == "foreground":
        masks = originals > (originals.min(axis=(1, 2, 3), keepdims=True) + FOREGROUND_THRESHOLD * data_range)
    # Priors of the folds that have been run (a partly finished study lacks some).
    folds = [
        int(f["fold"])
        for f in results.splits["folds"]
        if results.folder.prior(variant, int(f["fold"])).is_file()
    ]
    priors = [results.prior(variant, k) for k in sorted(folds)]
    stacked = np.stack(priors) if priors else np.zeros((0, *originals.shape[1:]), dtype=np.float32)
    return VariantData(variant, ids, originals, masks, data_range, sorted(folds), stacked)


def save_matrix(
    npy_path: Path, matrix: np.ndarray, row_ids: Sequence[str], col_ids: Sequence[str], metric: str, what: str
) -> list[Path]:
    """Write ``matrix`` to ``npy_path`` and its row / column subject ids to the ``.json`` beside it."""
    npy = save_npy(npy_path, np.asarray(matrix, dtype=np.float64))
    meta = write_json_atomic(
        npy_path.with_suffix(".json"),
        {
            "metric": metric,
            "label": METRICS[metric][1],
            "higher_is_better": higher_is_better(metric),
            "rows": list(row_ids),
            "columns": list(col_ids),
            "note": f"{what}; columns: candidate originals; NaN = pair not computed",
        },
    )
    return [npy, meta]


IDENTIFICATION_COLUMNS = (
    "variant",
    "arch",
    "tap",
    "metric",
    "n_queries",
    "candidates_per_row",
    "top1",
    "top5",
    "mean_rank",
    "median_rank",
    "chance_top1",
    "p_value_top1",
)


def write_identification_csv(path: Path, evaluations: list[ExperimentEvaluation]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(IDENTIFICATION_COLUMNS)
    for ev in evaluations:
        for metric, d in ev.identification.items():
            e = ev.experiment
            w.writerow(
                [
                    e.variant,
                    e.arch,
                    e.tap,
                    metric,
                    d["n_queries"],
                    d["candidates_per_row"],
                    d["top1"],
                    d["top5"],
                    repr(d["mean_rank"]),
                    repr(d["median_rank"]),
                    repr(d["chance_top1"]),
                    repr(d["p_value_top1"]),
                ]
            )
    return write_text_atomic(path, buf.getvalue())
