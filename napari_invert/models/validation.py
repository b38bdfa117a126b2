"""Training to a validation plateau: the shared machinery of victims, decoders and shadows.

* :func:`split_validation` holds out a deterministic part of the training list passed to a
  trainer (by ``TrainConfig.validation_fraction`` and ``seed``). With fewer than
  :data:`MIN_TRAIN_FOR_HOLDOUT` + 1 subjects nothing is held out: the network is judged
  on its own training subjects (``source = "training"``, an optimistic score that the
  convergence record says it is) and still stops on a plateau of that score.
* :class:`Validation` is what a trainer hands to
  :func:`~napari_invert.models.training.run_training_loop`: a scoring function, the
  metric's name and direction, and the baseline score (what a network that learned
  nothing beyond the training average achieves on the same validation subjects).
* :class:`PlateauState` tracks the best score, the plateau counter and the
  learning-rate scale; it is serialised into the resumable checkpoint so a resumed run
  continues identically.
* :func:`lr_factor` is the learning-rate schedule (warm-up + constant / cosine /
  plateau decay).
* :func:`majority_label_map` and :func:`mean_foreground_dice` give the segmenters'
  validation score and baseline; :func:`segmentation_verdict` turns them into the
  "does this victim segment?" verdict stored in the convergence record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from napari_invert.config import TrainConfig

#: a held-out split needs at least this many subjects left to train on
MIN_TRAIN_FOR_HOLDOUT = 2

#: what a "victim does not segment" message adds about the conclusions (a victim that learned
#: little, on its own training subjects too, or one whose training-subject Dice is unknown)
_FEATURE_INVERSION_HOLDS = (
    "Feature-inversion results still hold (that attack reads the encoder's outputs and works "
    "on untrained networks too)"
)

VERDICT_IMPLICATIONS = (
    _FEATURE_INVERSION_HOLDS + "; membership inference (training-data leakage) and the utility "
    "(Dice) axis of the defences do not: a victim that does not segment has learned little "
    "to leak and has no utility to lose."
)

#: ... and what it adds instead when the victim fits the subjects it trained on clearly better
#: than unseen ones (measured: such a U-Net on LPBA40 gave membership AUC 1.00)
MEMORISED_IMPLICATIONS = (
    _FEATURE_INVERSION_HOLDS + ". This victim fits the subjects it trained on clearly better than "
    "unseen ones: it memorised them, which is exactly what membership inference exploits, so a "
    "membership result on it is real training-data leakage (expect it to be strong); the utility "
    "(Dice) axis of the defences means little, as the victim is of little use on new patients."
)


@dataclass(frozen=True)
class ValidationSplit:
    """Indices into the list passed to a trainer: ``train`` (gradient steps) and
    ``validation`` (scored only); ``source`` is ``"held_out"``, ``"training"`` (too few
    subjects: the training subjects are scored) or ``"none"`` (validation switched off)."""

    train: list[int]
    validation: list[int]
    source: str
    note: str = ""


def split_validation(n: int, config: TrainConfig) -> ValidationSplit:
    """Deterministic hold-out of ``round(validation_fraction * n)`` (at least 1) of ``n``
    samples, chosen by ``config.seed``; see the module docstring for small ``n``."""
    if n < 1:
        raise ValueError("no training samples")
    everything = list(range(n))
    if config.validation_fraction <= 0:
        return ValidationSplit(everything, [], "none", "validation switched off (validation_fraction: 0)")
    n_val = max(1, round(config.validation_fraction * n))
    if n - n_val < MIN_TRAIN_FOR_HOLDOUT:
        return ValidationSplit(
            everything,
            everything,
            "training",
            f"only {n} training subject(s): none held out; the score is measured on the "
            "training subjects themselves (optimistic)",
        )
    perm = np.random.default_rng([config.seed, 17]).permutation(n)
    val = sorted(int(i) for i in perm[:n_val])
    train = [i for i in everything if i not in set(val)]
    return ValidationSplit(train, val, "held_out", f"{n_val} of {n} subjects held out for validation")


@dataclass
class Validation:
    """How a trainer is judged (handed to ``run_training_loop``).

    ``score()``: the module's validation score now (the loop puts the module in eval mode
    and no-grad around the call). ``metric``: e.g. ``"dice"``; ``higher_is_better``;
    ``baseline``: the score of the no-learning reference on the same subjects (or None);
    ``info``: free JSON facts for the convergence record (split, subject ids, ...);
    ``judge(record) -> dict``: optional extra fields for the final record (a verdict);
    ``relative_delta``: ``min_delta`` is a fraction of the current reference score (for
    unbounded error metrics such as MSE) rather than an absolute difference (Dice).
    """

    score: Callable[[], float]
    metric: str
    higher_is_better: bool
    baseline: float | None = None
    baseline_name: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    judge: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    relative_delta: bool = False


@dataclass
class PlateauState:
    """Early-stopping bookkeeping (JSON round-trip via :meth:`to_dict` / :meth:`from_dict`).

    ``best_*``: any improvement (its weights are kept); ``ref_*``: the last improvement of
    at least ``min_delta`` (patience counts from ``ref_step``); ``lr_scale``: the
    plateau-decay multiplier; ``evals``: the curve ``[{step, train_loss, score, lr}]``.
    """

    best_score: float | None = None
    best_step: int = 0
    ref_score: float | None = None
    ref_step: int = 0
    decay_step: int = 0
    lr_scale: float = 1.0
    evals: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PlateauState:
        return cls(**(data or {}))

    def update(
        self, step: int, score: float, higher_is_better: bool, config: TrainConfig, relative: bool = False
    ) -> bool:
        """Record an evaluation at ``step``; return True when it is a new best. An
        improvement resets patience when it is at least ``min_delta`` (times the reference
        score when ``relative``)."""
        sign = 1.0 if higher_is_better else -1.0
        new_best = self.best_score is None or sign * (score - self.best_score) > 0
        if new_best:
            self.best_score, self.best_step = float(score), step
        delta = config.min_delta * (abs(self.ref_score) if relative and self.ref_score is not None else 1.0)
        if self.ref_score is None or sign * (score - self.ref_score) >= delta:
            self.ref_score, self.ref_step = float(score), step
        elif config.lr_schedule == "plateau" and config.patience is not None:
            # halve the learning rate after half the patience without a real improvement
            since = step - max(self.ref_step, self.decay_step)
            if since >= max(1, config.patience // 2):
                self.lr_scale *= 0.5
                self.decay_step = step
        return new_best

    def plateaued(self, step: int, config: TrainConfig) -> bool:
        """True when ``patience`` steps passed without an improvement of ``min_delta``."""
        return (
            config.patience is not None
            and self.ref_score is not None
            and step - self.ref_step >= config.patience
        )


def lr_factor(step: int, config: TrainConfig, plateau_scale: float = 1.0) -> float:
    """Multiplier of ``config.lr`` for 0-based ``step``: linear warm-up over
    ``warmup_steps``, then constant, cosine (to 1 % at ``steps``) or plateau decay."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        span = max(1, config.steps - config.warmup_steps)
        t = min(1.0, (step - config.warmup_steps) / span)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))
    if config.lr_schedule == "plateau":
        return plateau_scale
    return 1.0


# -- segmentation score, baseline and verdict ------------------------------------------------


def majority_label_map(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Most frequent label per voxel over ``N`` label maps ``(X, Y, Z)`` (ties: the
    smaller label, i.e. background first). The "segmenter" that learned only where each
    structure usually lies: the baseline every victim must clearly beat."""
    if len(labels) == 0:
        raise ValueError("majority_label_map: no label maps")
    stack = np.stack([np.asarray(a) for a in labels]).reshape(len(labels), -1)
    s = np.sort(stack, axis=0)
    best = s[0].copy()
    best_n = np.ones(s.shape[1], dtype=np.int32)
    run = np.ones(s.shape[1], dtype=np.int32)
    for i in range(1, s.shape[0]):
        run = np.where(s[i] == s[i - 1], run + 1, 1)
        better = run > best_n
        best = np.where(better, s[i], best)
        best_n = np.where(better, run, best_n)
    return best.reshape(np.shape(labels[0]))


def mean_foreground_dice(preds: Sequence[np.ndarray], refs: Sequence[np.ndarray], n_classes: int) -> float:
    """Mean over subjects of the mean Dice over foreground classes present in either map
    (:func:`~napari_invert.metrics.dice.mean_dice`); in ``[0, 1]``, NaN subjects skipped."""
    from napari_invert.metrics.dice import mean_dice

    values = [mean_dice(p, r, n_classes) for p, r in zip(preds, refs)]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def segmentation_verdict(
    score: float | None, baseline: float | None, min_dice: float, min_gain: float, source: str = "held_out"
) -> dict[str, Any]:
    """Does the victim segment? ``{"segments": bool, "reason": str}``.

    It does when its best validation Dice is at least ``min_dice`` AND at least
    ``min_gain`` above the baseline (majority-label map of its own training labels).
    """
    where = "held-out validation subjects" if source == "held_out" else "its own training subjects"
    if score is None or not np.isfinite(score):
        return {"segments": False, "reason": "no validation Dice was measured. " + VERDICT_IMPLICATIONS}
    base = float("nan") if baseline is None else float(baseline)
    problems = []
    if score < min_dice:
        problems.append(f"Dice {score:.2f} on {where} is below the threshold {min_dice:.2f}")
    if np.isfinite(base) and score < base + min_gain:
        problems.append(
            f"Dice {score:.2f} is not clearly above the majority-label baseline {base:.2f} "
            f"(needs +{min_gain:.2f})"
        )
    if problems:
        return {"segments": False, "reason": "; ".join(problems) + ". " + VERDICT_IMPLICATIONS}
    text = f"Dice {score:.2f} on {where}"
    if np.isfinite(base):
        text += f" vs majority-label baseline {base:.2f}"
    return {"segments": True, "reason": text}
