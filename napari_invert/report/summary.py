"""What an evaluation computed: per-experiment results and the study-wide summary.

:class:`ExperimentEvaluation` holds the matrices, ranks and re-identification of one
experiment (variant, arch, tap); :class:`EvaluationSummary` is what
:func:`~napari_invert.report.evaluate.evaluate_study` returns and what ``summary.json``
holds (:meth:`EvaluationSummary.to_dict`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert.report.tables import (
    MetricRow,
    experiment_key,
    gain_of,
    higher_is_better,
    metric_label,
)
from napari_invert.study.layout import EVALUATION_LAYOUT_VERSION, EvaluationFolder
from napari_invert.study.results import Experiment

if TYPE_CHECKING:
    from napari_invert.report.dice import DiceRow


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
    ``warnings``: banners shown at the top of the report (e.g. victims that barely
    segment). ``deformation_settings``: mode, preset and what it means (chance level of a
    sampled ranking). ``native``: scores on each subject's native grid
    (:class:`~napari_invert.report.native.NativeEvaluation`) when
    ``evaluation.space: native``. ``dice_baseline``: the trivial predictor's Dice per
    victim (:class:`~napari_invert.report.dice_baseline.DiceBaseline`). ``membership``: pooled
    membership-inference results per ``"<variant>/<arch>"`` (written to
    ``evaluation/membership/``).
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
    warnings: list[str] = field(default_factory=list)
    deformation_settings: dict[str, Any] = field(default_factory=dict)
    native: Any = None
    dice_baseline: list[Any] = field(default_factory=list)
    membership: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, Any] | None = None
    frontier: dict[str, Any] | None = None

    @property
    def layout(self) -> EvaluationFolder:
        """Paths inside ``evaluation/``."""
        return EvaluationFolder(self.evaluation_dir)

    @property
    def report_path(self) -> Path:
        return self.layout.report_html

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
                    "mean": finite_mean(true),
                    "sd": finite_sd(true),
                    "prior_mean": finite_mean(prior) if prior is not None else None,
                    "gain_mean": finite_mean(np.array([gain_of(metric, a, b) for a, b in zip(true, prior)]))
                    if prior is not None
                    else None,
                    "others_mean": finite_mean(ev.other_values(metric)),
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
        return json_safe(
            {
                "layout": EVALUATION_LAYOUT_VERSION,
                "study_dir": str(self.study_dir),
                "metrics": self.metrics,
                "deformation_mode": self.deformation_mode,
                "deformation": self.deformation_settings,
                "data_range": self.data_range,
                "region": self.region,
                "experiments": exps,
                "dice": {
                    k: {"mean": finite_mean(np.array(v)), "sd": finite_sd(np.array(v)), "n": len(v)}
                    for k, v in sorted(dice.items())
                },
                "dice_baseline": [b.to_dict() for b in self.dice_baseline],
                "native": self.native.to_dict() if self.native is not None else None,
                "skipped": self.skipped,
                "warnings": self.warnings,
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


def json_safe(obj: Any) -> Any:
    """Replace NaN / inf (not valid JSON) by ``None``, recursively; numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def finite_mean(a: np.ndarray | None) -> float | None:
    if a is None:
        return None
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def finite_sd(a: np.ndarray) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return None
    return float(a.std(ddof=1)) if a.size > 1 else 0.0


class Log:
    """Progress lines on stderr with the seconds since the evaluation started."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[evaluate {time.perf_counter() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)
