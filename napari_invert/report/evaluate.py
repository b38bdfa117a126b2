"""Evaluate a study folder: similarity, re-identification, deformation, Dice -> files.

:func:`evaluate_study` reads a (finished or partly finished) study folder through
:class:`~napari_invert.study.results.StudyResults` and writes ``STUDY/evaluation/``::

    metrics.csv            one row per subject x variant x arch x tap x metric
    identification.csv     top-1 / top-5 / mean rank per experiment and metric
    dice.csv               per-subject Dice rows (when a segmenter checkpoint exists)
    summary.json           everything above in one document, plus verdicts and skips
    similarity_<variant>_<arch>_<tap>_<metric>.npy / .json   (reconstruction x candidate)
    prior_<variant>_<metric>.npy / .json                     (fold prior x candidate)
    deformation/<variant>_<arch>_<tap>/<ID>.nii.gz           |u| (mm) of the true pairs
    deformation/cache/*.json                                 registrations already done
    tables/table1|table2|table3|dice.{csv,md}
    figures/*.png
    report.html            self-contained (figures embedded), opens offline

Conventions
-----------
* Rows of a similarity matrix are the subjects whose reconstruction comes from the fold
  in which they were *private* (reconstructions of attack subjects, which the runner also
  writes, are ignored); columns ("candidates") are every subject of the cohort.
* All scores compare a reconstruction (or the prior) with a candidate's original inside
  the candidate original's brain mask, on the model grid.
* ``correlation`` = Pearson r (the paper's "MCC"); ``ssim`` = windowed Gaussian SSIM,
  mean over the mask; ``ssim_global`` = one global SSIM over the mask (the paper's
  SSIM); ``deformation`` = mean |displacement| (mm) of an affine + SyN registration of the
  reconstruction onto the candidate (lower is better).
* The prior (the attacker's mean image of its own subjects, ``<variant>/fold<k>/
  prior.nii.gz``) is scored against each true original; ``gain`` is positive when the
  reconstruction is closer to the subject than the prior is.
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import atomic_path, write_json_atomic
from napari_invert.errors import ConfigError, DataError
from napari_invert.report.tables import (
    METRICS,
    DiceRow,
    MetricRow,
    OriginalsVsOthers,
    Table,
    dice_order,
    dice_table,
    experiment_key,
    experiment_order,
    gain_of,
    higher_is_better,
    metric_label,
    table1,
    table2,
    table3,
    write_dice_csv,
    write_metrics_csv,
)
from napari_invert.study.layout import tap_slug
from napari_invert.study.results import Experiment, StudyResults
from napari_invert.threat_models import FEATURE_INVERSION, TRAINING_DATA_LEAKAGE

#: Similarity metrics computed as full reconstruction x candidate matrices.
SIMILARITY_METRICS: tuple[str, ...] = ("correlation", "ssim", "ssim_global")
ALL_METRICS: tuple[str, ...] = ("correlation", "ssim", "ssim_global", "deformation", "dice")
DEFORMATION_MODES: tuple[str, ...] = ("off", "sample", "full")
#: Scoring regions (see :func:`evaluate_study`).
REGIONS: tuple[str, ...] = ("mask", "foreground")
#: ``region="foreground"``: voxels above ``min + FOREGROUND_THRESHOLD * data_range``.
FOREGROUND_THRESHOLD = 0.05


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------
@dataclass
class ExperimentEvaluation:
    """Everything computed for one experiment (variant, arch, tap).

    ``similarity[metric]``: ``(n_rows, n_candidates)``; NaN where a pair was not computed
    (sampled deformation). ``ranks[metric]``: 1-based rank of the true original per row
    (among the computed pairs). ``prior_values[metric]``: the prior's score against each
    row's true original. ``identification[metric]``: summary dict (top-1, top-5, mean
    rank, ...).
    """

    experiment: Experiment
    row_ids: list[str]
    row_folds: list[int]
    candidate_ids: list[str]
    true_index: np.ndarray
    similarity: dict[str, np.ndarray] = field(default_factory=dict)
    prior_values: dict[str, np.ndarray] = field(default_factory=dict)
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    identification: dict[str, dict[str, Any]] = field(default_factory=dict)
    candidates_per_row: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return experiment_key(self.experiment)

    def true_values(self, metric: str) -> np.ndarray:
        """Score of each reconstruction against its own original."""
        m = self.similarity[metric]
        return m[np.arange(len(self.row_ids)), self.true_index]

    def other_values(self, metric: str) -> np.ndarray:
        """Scores against every other candidate (computed pairs only), pooled."""
        m = self.similarity[metric].copy()
        m[np.arange(len(self.row_ids)), self.true_index] = np.nan
        v = m.ravel()
        return v[np.isfinite(v)]


@dataclass
class EvaluationSummary:
    """What :func:`evaluate_study` computed and wrote.

    ``skipped[metric]``: why a requested metric was not computed (e.g. Dice without a
    segmenter checkpoint). ``verdicts``: one human sentence per experiment.
    """

    study_dir: Path
    evaluation_dir: Path
    metrics: list[str]
    deformation_mode: str
    experiments: list[ExperimentEvaluation]
    metric_rows: list[MetricRow]
    dice_rows: list[DiceRow]
    skipped: dict[str, str]
    notes: list[str]
    verdicts: list[str]
    files: list[Path]
    seconds: float
    data_range: dict[str, float] = field(default_factory=dict)
    region: str = "mask"

    @property
    def report_path(self) -> Path:
        return self.evaluation_dir / "report.html"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``summary.json`` holds)."""
        exps = []
        for ev in self.experiments:
            per_metric = {}
            for metric in ev.similarity:
                true = ev.true_values(metric)
                prior = ev.prior_values.get(metric)
                per_metric[metric] = {
                    "label": metric_label(metric),
                    "higher_is_better": higher_is_better(metric),
                    "mean": _finite_mean(true),
                    "sd": _finite_sd(true),
                    "prior_mean": _finite_mean(prior) if prior is not None else None,
                    "gain_mean": _finite_mean(np.array([gain_of(metric, a, b) for a, b in zip(true, prior)]))
                    if prior is not None
                    else None,
                    "others_mean": _finite_mean(ev.other_values(metric)),
                    "candidates_per_row": ev.candidates_per_row.get(metric),
                    "identification": ev.identification.get(metric),
                }
            exps.append(
                {
                    "variant": ev.experiment.variant,
                    "arch": ev.experiment.arch,
                    "tap": ev.experiment.tap,
                    "label": ev.experiment.label,
                    "n_reconstructions": len(ev.row_ids),
                    "n_candidates": len(ev.candidate_ids),
                    "subjects": ev.row_ids,
                    "metrics": per_metric,
                }
            )
        dice = {}
        for r in self.dice_rows:
            key = f"{r.variant}/{r.arch}/{r.tap or '-'}/{r.input}/{r.role}/{r.reference}"
            dice.setdefault(key, []).append(r.dice)
        return _json_safe(
            {
                "study_dir": str(self.study_dir),
                "metrics": self.metrics,
                "deformation_mode": self.deformation_mode,
                "data_range": self.data_range,
                "region": self.region,
                "experiments": exps,
                "dice": {
                    k: {"mean": _finite_mean(np.array(v)), "sd": _finite_sd(np.array(v)), "n": len(v)}
                    for k, v in sorted(dice.items())
                },
                "skipped": self.skipped,
                "notes": self.notes,
                "verdicts": self.verdicts,
                "files": sorted(
                    str(p.relative_to(self.evaluation_dir))
                    for p in self.files
                    if p.is_relative_to(self.evaluation_dir)
                ),
                "seconds": round(self.seconds, 2),
            }
        )


def _json_safe(obj: Any) -> Any:
    """Replace NaN / inf (not valid JSON) by ``None``, recursively; numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _finite_mean(a: np.ndarray | None) -> float | None:
    if a is None:
        return None
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _finite_sd(a: np.ndarray) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    return float(a.std(ddof=1)) if a.size > 1 else 0.0


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
class _Log:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[evaluate {time.perf_counter() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array))
    return path


def _resolve_metrics(metrics: Sequence[str] | None, configured: Sequence[str]) -> list[str]:
    chosen = list(configured if metrics is None else metrics)
    unknown = [m for m in chosen if m not in ALL_METRICS]
    if unknown:
        raise ConfigError(f"evaluate: unknown metric(s) {unknown} (choose from {list(ALL_METRICS)})")
    return [m for m in ALL_METRICS if m in chosen]


def _resolve_device(device: Any, configured: str):  # -> torch.device
    from napari_invert.device import resolve_device

    return resolve_device(configured if device is None else device)


@dataclass
class _VariantData:
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


# ---------------------------------------------------------------------------------------
# metric back-ends (napari_invert.metrics / napari_invert.identify)
# ---------------------------------------------------------------------------------------
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


def _identification(
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
        "p_value_top1": _binomial_sf(top1, n, 1.0 / max(candidates_per_row, 1)),
        "true_mean": _finite_mean(finite_true),
        "true_sd": _finite_sd(finite_true),
        "other_mean": _finite_mean(others),
        "other_sd": _finite_sd(others),
        "undefined_true_scores": int(true_nan.sum()),
        "ranks": [int(r) for r in ranks],
        "rank_histogram": [int(c) for c in np.bincount(ranks - 1, minlength=candidates_per_row)],
        "higher_is_better": higher,
    }


def _binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): chance of k or more top-1 hits by guessing."""
    from scipy.stats import binom

    if n == 0 or k == 0:
        return 1.0
    return float(binom.sf(k - 1, n, p))


# ---------------------------------------------------------------------------------------
# the evaluation
# ---------------------------------------------------------------------------------------
def evaluate_study(
    study_dir: str | Path,
    metrics: Sequence[str] | None = None,
    deformation: str | None = None,
    device: Any = None,
    progress: bool = True,
    *,
    figures: bool = True,
    region: str = "mask",
) -> EvaluationSummary:
    """Evaluate every experiment of a study folder and write ``STUDY/evaluation/``.

    Parameters
    ----------
    study_dir
        A study folder (see :mod:`napari_invert.study.layout`).
    metrics
        Subset of ``correlation``, ``ssim``, ``ssim_global``, ``deformation``, ``dice``;
        default: ``evaluation.metrics`` of the study's config.
    deformation
        ``off`` | ``sample`` (true original + ``evaluation.deformation.sample_size`` random
        others per reconstruction) | ``full`` (all pairs). Default: the config's mode when
        ``deformation`` is among the metrics, else ``off``. ``sample``/``full`` turn the
        deformation metric on even if ``metrics`` omits it.
    device
        For correlation and segmentation (``"auto"``, ``"cpu"``, ``"cuda"``); default: the
        config's ``device``.
    progress
        Print progress lines to stderr.
    figures
        Draw the PNG figures (and embed them in ``report.html``); ``False`` writes the
        numbers, tables and a figure-less report only (faster).
    region
        Where scores are computed: ``mask`` (default) = the study's mask of the candidate
        original (``data/<variant>/masks``, the brain mask, also for ``full_head``);
        ``foreground`` = the candidate original's voxels above
        :data:`FOREGROUND_THRESHOLD` x the data range (the paper's "voxels of the original
        above a threshold": for with-skull images this includes skull and scalp).

    Every file is written atomically; rerunning overwrites them and reuses the cached
    registrations in ``evaluation/deformation/cache``.
    """
    from napari_invert.config import load_config

    t_start = time.perf_counter()
    log = _Log(progress)
    results = StudyResults(study_dir)
    folder = results.folder
    config = load_config(folder.config_path)
    ev_cfg = config.evaluation
    chosen = _resolve_metrics(metrics, ev_cfg.metrics)
    if deformation is None:
        mode = ev_cfg.deformation.mode if "deformation" in chosen else "off"
    else:
        if deformation not in DEFORMATION_MODES:
            raise ConfigError(
                f"evaluate: deformation must be one of {DEFORMATION_MODES}, got {deformation!r}"
            )
        mode = deformation
    if mode == "off":
        chosen = [m for m in chosen if m != "deformation"]
    elif "deformation" not in chosen:
        chosen = [m for m in ALL_METRICS if m in [*chosen, "deformation"]]
    if not chosen:
        raise ConfigError("evaluate: no metric to compute (deformation is off and no other metric chosen)")
    if region not in REGIONS:
        raise ConfigError(f"evaluate: region must be one of {REGIONS}, got {region!r}")
    out_dir = folder.evaluation_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    notes: list[str] = []
    files: list[Path] = []
    if ev_cfg.space == "native":
        notes.append("evaluation.space = native is not implemented; all scores are on the model grid.")

    experiments = sorted(results.experiments(), key=experiment_order)
    if region == "mask" and any(e.variant == "full_head" for e in experiments):
        notes.append(
            "full_head scores are computed inside the brain mask (data/full_head/masks); the paper's "
            "with-skull SSIM used all voxels of the original above a threshold (skull and scalp "
            "included): rerun with region='foreground' for that."
        )
    elif region == "foreground":
        notes.append(
            f"Scores are computed over each candidate original's voxels above {FOREGROUND_THRESHOLD:g} x "
            "the data range (region='foreground'), not inside the study's masks."
        )
    if not experiments:
        raise DataError(folder.root, "no reconstructions found (run the study first)")
    if config.num_threads:  # as the study runner does: the config's torch CPU threads
        from napari_invert.device import set_threads

        set_threads(config.num_threads)
    torch_device = _resolve_device(device, config.device)
    log(f"{len(experiments)} experiment(s); metrics {chosen}; deformation {mode}")

    # -- per variant: candidates, priors, prior scores ----------------------------------------
    variants: dict[str, _VariantData] = {}
    for variant in sorted({e.variant for e in experiments}):
        variants[variant] = _load_variant(results, variant, region)
        vd = variants[variant]
        for metric in [m for m in SIMILARITY_METRICS if m in chosen and len(vd.folds)]:
            vd.prior_similarity[metric] = similarity_matrix(
                metric, vd.priors, vd.originals, vd.masks, vd.data_range, torch_device
            )
            files += _save_matrix(
                out_dir / f"prior_{variant}_{metric}",
                vd.prior_similarity[metric],
                [f"fold{k}" for k in vd.folds],
                vd.candidate_ids,
                metric,
                "rows: the attacker's prior (mean image) of each fold",
            )
        log(f"{variant}: {len(vd.candidate_ids)} candidates, data range {vd.data_range:.3g}")

    # -- per experiment: similarity matrices and identification -----------------------------
    evaluations: list[ExperimentEvaluation] = []
    for exp in experiments:
        vd = variants[exp.variant]
        row_ids = [
            s for s in vd.candidate_ids if _private_fold(results, s) is not None and results.has_recon(exp, s)
        ]
        missing = [s for s in vd.candidate_ids if s not in row_ids]
        if missing:
            notes.append(
                f"{exp.label}: no reconstruction from the private fold for {len(missing)} "
                f"subject(s) ({', '.join(missing[:8])}{'...' if len(missing) > 8 else ''})."
            )
        if not row_ids:
            continue
        row_folds = [results.fold_of(s) for s in row_ids]
        recons = np.stack([results.recon(exp, s) for s in row_ids])
        true_index = np.array([vd.index(s) for s in row_ids], dtype=int)
        prior_rows = [vd.prior_index(f) for f in row_folds]  # DataError if a fold lacks its prior
        ev = ExperimentEvaluation(exp, row_ids, row_folds, vd.candidate_ids, true_index)
        for metric in [m for m in SIMILARITY_METRICS if m in chosen]:
            ev.similarity[metric] = similarity_matrix(
                metric, recons, vd.originals, vd.masks, vd.data_range, torch_device
            )
            pm = vd.prior_similarity[metric]
            ev.prior_values[metric] = np.array(
                [pm[p, t] for p, t in zip(prior_rows, true_index)], dtype=float
            )
            ev.candidates_per_row[metric] = len(vd.candidate_ids)
        first_tap = (config.attack.taps.get(exp.arch) or [exp.tap])[0]
        if mode != "off" and (config.evaluation.deformation.taps == "all" or exp.tap == first_tap):
            _deformation(results, ev, vd, recons, mode, config.evaluation.deformation, out_dir, log, files)
        for metric, matrix in ev.similarity.items():
            higher = higher_is_better(metric)
            n_bad = int(np.isnan(matrix).sum()) if metric != "deformation" else 0
            if n_bad:
                notes.append(
                    f"{exp.label}: {n_bad} undefined {metric_label(metric)} score(s) "
                    "(constant image inside the mask) ranked as the worst."
                )
            ev.ranks[metric], ev.identification[metric] = _identification(
                matrix, true_index, higher, ev.candidates_per_row[metric], metric == "deformation"
            )
            files += _save_matrix(
                out_dir / f"similarity_{ev.key}_{metric}",
                matrix,
                row_ids,
                vd.candidate_ids,
                metric,
                "rows: reconstructions (private fold)",
            )
        evaluations.append(ev)
        log(f"{exp.label}: {len(row_ids)} reconstructions scored")
        del recons

    # -- Dice ---------------------------------------------------------------------------------
    dice_rows: list[DiceRow] = []
    dice_metric_rows: list[MetricRow] = []
    if "dice" in chosen:
        dice_rows, dice_metric_rows, reason = _dice(results, evaluations, variants, torch_device, log)
        dice_rows.sort(key=dice_order)
        if reason and dice_rows:
            notes.append(f"Dice computed only in part: {reason}.")
        elif reason:
            skipped["dice"] = reason
            log(f"Dice skipped: {reason}")

    # -- rows, tables, figures, report --------------------------------------------------------
    metric_rows = _metric_rows(evaluations) + dice_metric_rows
    metric_rows.sort(
        key=lambda r: (experiment_order(r.experiment), list(METRICS).index(r.metric), r.subject_id)
    )
    files.append(write_metrics_csv(out_dir / "metrics.csv", metric_rows))
    files.append(_write_identification_csv(out_dir / "identification.csv", evaluations))
    if dice_rows:
        files.append(write_dice_csv(out_dir / "dice.csv", dice_rows))

    tables = _tables(evaluations, metric_rows, dice_rows, mode)
    for t in tables:
        files += t.write(out_dir / "tables")
    verdicts = _verdicts(evaluations, ev_cfg.identification_metric)
    controls = _controls(folder.root, config, torch_device, log)
    if controls is not None:
        files.append(out_dir / "controls" / "controls.json")
        verdicts = controls["verdicts"] + verdicts  # lead with the controls
    membership = _membership(results, log)
    verdicts += membership_verdicts(membership) or [
        f"[{TRAINING_DATA_LEAKAGE}] not measured: membership inference needs held-out non-members "
        "(set holdout > 0 and membership.enabled in the config)."
    ]

    summary = EvaluationSummary(
        study_dir=folder.root,
        evaluation_dir=out_dir,
        metrics=chosen,
        deformation_mode=mode,
        experiments=evaluations,
        metric_rows=metric_rows,
        dice_rows=dice_rows,
        skipped=skipped,
        notes=notes,
        verdicts=verdicts,
        files=files,
        seconds=0.0,
        data_range={v: d.data_range for v, d in variants.items()},
        region=region,
    )
    from napari_invert.report.figures import make_figures
    from napari_invert.report.html import write_report

    drawn = (
        make_figures(results, summary, variants_data=variants, out_dir=out_dir / "figures", log=log)
        if figures
        else []
    )
    files += [f.path for f in drawn]
    files.append(out_dir / "report.html")
    files.append(out_dir / "summary.json")
    summary.seconds = time.perf_counter() - t_start
    write_report(out_dir / "report.html", results, summary, tables, drawn)
    write_json_atomic(out_dir / "summary.json", summary.to_dict())
    log(f"done in {summary.seconds:.1f}s -> {out_dir}")
    return summary


def _controls(study_root: Path, config: Any, device: Any, log: _Log) -> dict[str, Any] | None:
    """Members vs non-members, untrained victim and re-identification baselines
    (:mod:`napari_invert.report.controls`), when the study has any of them."""
    from napari_invert.report.controls import evaluate_controls

    splits = StudyResults(study_root).splits
    has_holdout = any(f.get("holdout") for f in splits["folds"])
    if not (has_holdout or config.controls.untrained_victim or config.controls.reid_baselines):
        return None
    log("controls: members vs non-members, untrained victim, re-identification baselines")
    return evaluate_controls(study_root, device=device, log=log)


def _membership(results: StudyResults, log: _Log) -> dict[str, dict[str, Any]]:
    """Pool the runner's per-fold membership-inference results: ``{"<variant>/<arch>": pooled}``."""
    from napari_invert.membership import write_pooled_membership

    pooled: dict[str, dict[str, Any]] = {}
    for variant in results.variants:
        for arch in sorted({a for f in (results.root / variant).glob("fold*") for a in _arch_dirs(f)}):
            doc = write_pooled_membership(results.folder, variant, arch)
            if doc is not None:
                pooled[f"{variant}/{arch}"] = doc
                log(f"membership inference pooled: {variant}/{arch}")
    return pooled


def _arch_dirs(fold_dir: Path) -> list[str]:
    return [p.name for p in fold_dir.iterdir() if p.is_dir()]


def membership_verdicts(pooled: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per pooled result: the strongest attack's AUC beside its untrained control."""
    out = []
    for key, doc in pooled.items():
        if not doc.get("attacks"):
            continue
        name, best = max(doc["attacks"].items(), key=lambda kv: kv[1]["auc"])
        control = doc.get("controls", {}).get("untrained_victim", {}).get("attacks", {}).get(name)
        lo, hi = best["auc_ci"]
        text = (
            f"[{TRAINING_DATA_LEAKAGE}] {key}: membership inference AUC {best['auc']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] "
            f"({name}, p = {best['auc_p_value']:.2g}; {doc['n_members']} members vs {doc['n_nonmembers']} "
            "held-out non-members; chance 0.5)"
        )
        if control:
            text += f"; untrained victim {control['auc']:.2f}"
        text += (
            ". The weights reveal who trained them."
            if lo > 0.5
            else ". No clear evidence the weights reveal who trained them."
        )
        out.append(text)
    return out


def _private_fold(results: StudyResults, subject_id: str) -> int | None:
    try:
        return results.fold_of(subject_id)
    except KeyError:
        return None


def _load_variant(results: StudyResults, variant: str, region: str = "mask") -> _VariantData:
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
    return _VariantData(variant, ids, originals, masks, data_range, sorted(folds), stacked)


def _save_matrix(
    stem: Path, matrix: np.ndarray, row_ids: Sequence[str], col_ids: Sequence[str], metric: str, what: str
) -> list[Path]:
    npy = save_npy(stem.with_name(stem.name + ".npy"), np.asarray(matrix, dtype=np.float64))
    meta = write_json_atomic(
        stem.with_name(stem.name + ".json"),
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


# ---------------------------------------------------------------------------------------
# deformation
# ---------------------------------------------------------------------------------------
def _sample_columns(row_id: str, true_col: int, n: int, k: int) -> list[int]:
    """True column plus ``k`` others, chosen reproducibly from the subject id."""
    others = [c for c in range(n) if c != true_col]
    rng = np.random.default_rng(zlib.crc32(row_id.encode("utf-8")))
    pick = rng.choice(len(others), size=min(k, len(others)), replace=False) if others else []
    return sorted([true_col, *(others[int(i)] for i in pick)])


#: ANTs seed of every registration (reproducible with single-threaded workers).
DEFORMATION_SEED = 0


def _deformation(
    results: StudyResults,
    ev: ExperimentEvaluation,
    vd: _VariantData,
    recons: np.ndarray,
    mode: str,
    cfg: Any,
    out_dir: Path,
    log: _Log,
    files: list[Path],
) -> None:
    """Register reconstructions (moving) onto candidate originals (fixed), paper 4.2.2.

    ``full``: every pair; ``sample``: the true original plus ``cfg.sample_size`` others
    per reconstruction. Also registers each row's fold prior onto the true original.
    Uses :func:`napari_invert.metrics.deformation_matrix` (parallel workers, content-keyed
    cache in ``evaluation/deformation/cache``: a rerun does not recompute); the magnitude
    maps of the true pairs are written as NIfTI on the model grid.
    """
    from napari_invert.data.nifti import save_nifti
    from napari_invert.metrics.deformation import deformation_matrix, magnitude_cache_path

    n_rows, n = len(ev.row_ids), len(vd.candidate_ids)
    cache_dir = out_dir / "deformation" / "cache"
    e = ev.experiment
    maps_dir = out_dir / "deformation" / f"{e.variant}_{e.arch}_{tap_slug(e.tap)}"
    spacing = results.spacing
    true_pairs = [(r, int(t)) for r, t in enumerate(ev.true_index)]
    other_pairs = []
    for r, sid in enumerate(ev.row_ids):
        t = int(ev.true_index[r])
        cols = range(n) if mode == "full" else _sample_columns(sid, t, n, cfg.sample_size)
        other_pairs += [(r, c) for c in cols if c != t]
    # moving images: the reconstructions, then the fold priors (for the prior baseline)
    moving = [*recons, *vd.priors]
    prior_pairs = [(n_rows + vd.prior_index(f), int(t)) for f, t in zip(ev.row_folds, ev.true_index)]
    common: dict[str, Any] = {
        "spacing": spacing,
        "preset": cfg.preset,
        "masks": list(vd.masks),
        "workers": cfg.workers,
        "cache_dir": cache_dir,
        "progress": log.enabled,
        "seed": DEFORMATION_SEED,
    }
    t0 = time.perf_counter()
    values = deformation_matrix(list(vd.originals), moving, true_pairs, save_magnitude=True, **common)
    values.update(deformation_matrix(list(vd.originals), moving, other_pairs + prior_pairs, **common))
    matrix = np.full((n_rows, n), np.nan)
    for (r, c), v in values.items():
        if r < n_rows:
            matrix[r, c] = v
    for r, t in true_pairs:
        npy = magnitude_cache_path(
            cache_dir, vd.originals[t], recons[r], spacing, cfg.preset, vd.masks[t], DEFORMATION_SEED
        )
        if npy.is_file():
            target = maps_dir / f"{ev.row_ids[r]}.nii.gz"
            files.append(save_nifti(target, np.load(npy).astype(np.float32), results.affine))
    ev.similarity["deformation"] = matrix
    ev.prior_values["deformation"] = np.array([values[p] for p in prior_pairs], dtype=float)
    ev.candidates_per_row["deformation"] = n if mode == "full" else min(n, 1 + cfg.sample_size)
    log(
        f"{e.label}: deformation ({mode}), {len(values)} registrations "
        f"({time.perf_counter() - t0:.1f}s, cached pairs reused)"
    )


# ---------------------------------------------------------------------------------------
# Dice
# ---------------------------------------------------------------------------------------
def _n_classes(results: StudyResults, meta: dict[str, Any], labels: list[np.ndarray]) -> int:
    for source in (meta, results.cohort):
        n = source.get("n_classes") if isinstance(source, dict) else None
        if isinstance(n, int) and n >= 2:
            return n
    return int(max(int(a.max()) for a in labels)) + 1


def _dice(
    results: StudyResults,
    evaluations: list[ExperimentEvaluation],
    variants: dict[str, _VariantData],
    device: Any,
    log: _Log,
) -> tuple[list[DiceRow], list[MetricRow], str | None]:
    """Paper Section 4.2.3: re-segment reconstructions with the fold's own trained victim."""
    from napari_invert.checkpoint import checkpoint_exists

    folder = results.folder
    rows: list[DiceRow] = []
    mrows: list[MetricRow] = []
    missing_ckpt: list[str] = []
    missing_labels: set[str] = set()
    label_cache: dict[str, dict[str, np.ndarray | None]] = {}
    splits = {int(f["fold"]): f for f in results.splits["folds"]}
    jobs = sorted({(e.experiment.variant, f, e.experiment.arch) for e in evaluations for f in e.row_folds})
    for variant, fold, arch in jobs:
        stem = folder.segmenter_stem(variant, fold, arch)
        if not checkpoint_exists(stem):
            missing_ckpt.append(str(stem.relative_to(folder.root)) + ".safetensors")
            continue
        vd = variants[variant]
        if variant not in label_cache:
            label_cache[variant] = {s: results.labels(variant, s) for s in vd.candidate_ids}
        labels = label_cache[variant]
        if any(v is None for v in labels.values()):
            missing_labels.add(variant)
            continue
        from napari_invert.models import load_segmenter

        model, meta = load_segmenter(stem, device)
        n_classes = _n_classes(results, meta if isinstance(meta, dict) else {}, list(labels.values()))
        private = set(splits[fold]["private"])
        fold_ids = list(splits[fold]["private"]) + list(splits[fold]["attack"])
        seg_orig: dict[str, np.ndarray] = {}
        for sid in fold_ids:
            seg_orig[sid] = _segment(model, vd.originals[vd.index(sid)], device)
            role = "private" if sid in private else "attack"
            dice = _mean_dice(seg_orig[sid], labels[sid], n_classes)
            rows.append(DiceRow(variant, fold, arch, "", sid, role, "original", "manual", dice))
        seg_prior = _segment(model, vd.priors[vd.prior_index(fold)], device)
        for ev in evaluations:
            e = ev.experiment
            if e.variant != variant or e.arch != arch:
                continue
            for sid, f in zip(ev.row_ids, ev.row_folds):
                if f != fold:
                    continue
                seg = _segment(model, results.recon(e, sid), device)
                refs = {"manual": labels[sid], "original_segmentation": seg_orig[sid]}
                for reference, metric in (("manual", "dice"), ("original_segmentation", "dice_seg")):
                    value = _mean_dice(seg, refs[reference], n_classes)
                    prior_value = _mean_dice(seg_prior, refs[reference], n_classes)
                    rows.append(
                        DiceRow(
                            variant, fold, arch, e.tap, sid, "private", "reconstruction", reference, value
                        )
                    )
                    rows.append(
                        DiceRow(variant, fold, arch, e.tap, sid, "private", "prior", reference, prior_value)
                    )
                    gain = gain_of(metric, value, prior_value)
                    mrows.append(
                        MetricRow(sid, fold, variant, arch, e.tap, metric, value, prior_value, gain, None)
                    )
        log(f"Dice: {variant} fold {fold} {arch} done")
        del model
    reasons = []
    if missing_ckpt:
        reasons.append(
            f"no segmenter checkpoint for {len(missing_ckpt)} of {len(jobs)} victim(s) "
            f"(e.g. {missing_ckpt[0]})"
        )
    if missing_labels:
        reasons.append(f"no manual labels for variant(s) {sorted(missing_labels)} (data/<variant>/labels)")
    reason = "; ".join(reasons) if reasons else None
    if not rows and reason is None:
        reason = "no reconstruction to segment"
    return rows, mrows, reason


def _segment(model: Any, image: np.ndarray, device: Any) -> np.ndarray:
    from napari_invert.models import predict

    return np.asarray(predict(model, np.asarray(image, dtype=np.float32), device))


def _mean_dice(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> float:
    from napari_invert.metrics import mean_dice

    return float(mean_dice(pred, ref, n_classes))


# ---------------------------------------------------------------------------------------
# rows, tables, verdicts
# ---------------------------------------------------------------------------------------
def _metric_rows(evaluations: list[ExperimentEvaluation]) -> list[MetricRow]:
    rows = []
    for ev in evaluations:
        e = ev.experiment
        for metric in ev.similarity:
            true = ev.true_values(metric)
            prior = ev.prior_values[metric]
            ranks = ev.ranks[metric]
            for i, sid in enumerate(ev.row_ids):
                rows.append(
                    MetricRow(
                        sid,
                        ev.row_folds[i],
                        e.variant,
                        e.arch,
                        e.tap,
                        metric,
                        float(true[i]),
                        float(prior[i]),
                        gain_of(metric, float(true[i]), float(prior[i])),
                        int(ranks[i]),
                    )
                )
    return rows


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


def _write_identification_csv(path: Path, evaluations: list[ExperimentEvaluation]) -> Path:
    import csv
    import io

    from napari_invert._io import write_text_atomic

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


def _tables(
    evaluations: list[ExperimentEvaluation],
    rows: list[MetricRow],
    dice_rows: list[DiceRow],
    mode: str,
) -> list[Table]:
    """Tables 1-3 (and the Dice table when there are Dice rows)."""
    t2data = {
        ev.experiment: {m: OriginalsVsOthers(ev.true_values(m), ev.other_values(m)) for m in ev.similarity}
        for ev in evaluations
    }
    n_cand = {ev.experiment: len(ev.candidate_ids) for ev in evaluations}
    note = None
    per_row = [
        ev.candidates_per_row["deformation"] for ev in evaluations if "deformation" in ev.candidates_per_row
    ]
    if mode == "sample" and per_row:
        note = {"deformation": f"true + {per_row[0] - 1} sampled, chance 1/{per_row[0]}"}
    tables = [table1(rows), table2(t2data), table3(rows, n_cand, note)]
    if dice_rows:
        tables.append(dice_table(dice_rows))
    return tables


def _verdicts(evaluations: list[ExperimentEvaluation], preferred: str) -> list[str]:
    out = []
    for ev in evaluations:
        metric = preferred if preferred in ev.identification else next(iter(ev.identification), None)
        if metric is None:
            continue
        d = ev.identification[metric]
        true = ev.true_values(metric)
        prior = ev.prior_values[metric]
        gain = np.array([gain_of(metric, a, b) for a, b in zip(true, prior)])
        arch = {"unet": "U-Net", "segnet": "SegNet"}.get(ev.experiment.arch, ev.experiment.arch)
        text = (
            f"[{FEATURE_INVERSION}] {arch} {ev.experiment.tap} ({ev.experiment.variant}): "
            f"{d['top1']}/{d['n_queries']} private "
            f"subjects re-identified at top-1 by {metric_label(metric)} "
            f"(chance 1/{d['candidates_per_row']}, p = {d['p_value_top1']:.2g}); mean rank "
            f"{d['mean_rank']:.2f}; {metric_label(metric)} {np.nanmean(true):.2f} vs prior "
            f"{np.nanmean(prior):.2f} (gain {np.nanmean(gain):+.2f})."
        )
        best = max(
            ev.identification,
            key=lambda m: ev.identification[m]["top1"] / max(ev.identification[m]["n_queries"], 1),
        )
        if ev.identification[best]["top1"] > d["top1"]:
            b = ev.identification[best]
            text += f" Best metric: {metric_label(best)}, {b['top1']}/{b['n_queries']} at top-1."
        out.append(text)
    return out
