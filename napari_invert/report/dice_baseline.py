"""The victims' Dice against a trivial predictor, and the report's "barely segments" banner.

* :func:`compute_baselines`: per victim (variant, arch), its mean Dice on the fold's unseen
  subjects and on the subjects it trained on, beside the Dice of a trivial predictor on the
  unseen subjects (the majority label per voxel of the victim's training labels,
  :func:`napari_invert.metrics.majority_baseline_dice`): :class:`DiceBaseline`;
* :func:`barely_segments_warnings`: one banner when a victim's Dice on unseen subjects is
  within its ``min_gain`` (:data:`BARELY_SEGMENTS_MARGIN` by default) of that baseline, saying
  whether it memorised its training subjects or learned little, and what that means for each
  threat model.

Threat model: none; this is the victims' utility (see :mod:`napari_invert.study.unseen_test`
for the per-fold verdict the study records).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert.models.validation import MEMORISED_IMPLICATIONS
from napari_invert.report.tables import _ARCH_ORDER, _VARIANT_ORDER, _position, mean_sd
from napari_invert.study.results import StudyResults
from napari_invert.threat_models import ARCH_NAMES

if TYPE_CHECKING:
    from napari_invert.report.dice import DiceRow

__all__ = [
    "BARELY_SEGMENTS_MARGIN",
    "DiceBaseline",
    "barely_segments_warnings",
    "compute_baselines",
    "victim_warnings",
]

#: Warn when a victim's mean Dice on unseen subjects exceeds the trivial predictor's by
#: less than this (absolute Dice). The default of ``segmenter_training.min_dice_gain``, the
#: margin of the victims' own verdict: a study passes it in, so the report's two warnings
#: (folds pooled here, per fold in the convergence records) agree.
BARELY_SEGMENTS_MARGIN = 0.05

_ARCH = ARCH_NAMES


@dataclass
class DiceBaseline:
    """A victim (variant, arch) against the trivial predictor, on its unseen subjects.

    ``victim_unseen``: mean Dice of the victims (one per fold) on their attack (unseen)
    subjects; ``baseline_unseen``: mean Dice of the majority label map of each fold's
    training labels on the same subjects; ``n``: subjects x folds pooled; ``min_gain``: the
    margin below which it "barely segments"; ``victim_trained_on``: its mean Dice on the
    subjects it was trained on (NaN when not scored), which tells a victim that memorised
    them from one that learned little (:attr:`failure`).
    """

    variant: str
    arch: str
    victim_unseen: float
    baseline_unseen: float
    baseline_sd: float
    n: int
    min_gain: float = BARELY_SEGMENTS_MARGIN
    victim_trained_on: float = float("nan")

    @property
    def margin(self) -> float:
        return float(self.victim_unseen - self.baseline_unseen)

    @property
    def barely_segments(self) -> bool:
        return bool(np.isfinite(self.margin) and self.margin < self.min_gain)

    @property
    def failure(self) -> str | None:
        """``memorised`` / ``learned_little`` when it barely segments, else None
        (:func:`napari_invert.study.unseen_test.failure_mode`)."""
        from napari_invert.study.unseen_test import failure_mode

        trained_on = self.victim_trained_on if np.isfinite(self.victim_trained_on) else None
        return failure_mode(not self.barely_segments, trained_on, self.victim_unseen, self.min_gain)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["margin"] = self.margin
        d["barely_segments"] = self.barely_segments
        d["failure"] = self.failure
        return d


def _original_dice(
    dice_rows: Sequence[DiceRow], variant: str, arch: str, fold: int, role: str
) -> list[float]:
    """The fold's victim's Dice on the originals of ``role`` (``private``: trained on;
    ``attack``: unseen), against the manual labels."""
    return [
        r.dice
        for r in dice_rows
        if (r.variant, r.arch, r.fold, r.role) == (variant, arch, fold, role)
        and r.input == "original"
        and r.reference == "manual"
    ]


def compute_baselines(
    results: StudyResults,
    dice_rows: Sequence[DiceRow],
    n_classes_hint: int | None = None,
    min_gain: float = BARELY_SEGMENTS_MARGIN,
) -> list[DiceBaseline]:
    """The trivial predictor's Dice on each fold's unseen subjects, beside the victims'.

    For every (variant, fold) with victim rows: the majority label map of the fold's
    private (training) labels, scored against the labels of its attack subjects. Labels
    are read from ``data/<variant>/labels``.
    """
    splits = {int(f["fold"]): f for f in results.splits["folds"]}
    out: list[DiceBaseline] = []
    pairs = sorted(
        {(r.variant, r.arch) for r in dice_rows},
        key=lambda va: (_position(va[0], _VARIANT_ORDER), _position(va[1], _ARCH_ORDER)),
    )
    per_fold: dict[tuple[str, int], np.ndarray] = {}
    for variant, arch in pairs:
        victim, base, trained_on = [], [], []
        folds = sorted({r.fold for r in dice_rows if (r.variant, r.arch) == (variant, arch)})
        for fold in folds:
            trained_on += _original_dice(dice_rows, variant, arch, fold, "private")
            victim += _original_dice(dice_rows, variant, arch, fold, "attack")
            if (variant, fold) not in per_fold:
                values = results.majority_baseline_dice(
                    variant, splits[fold]["private"], splits[fold]["attack"], n_classes_hint
                )
                if values is None:
                    continue
                per_fold[(variant, fold)] = values
            base += list(per_fold[(variant, fold)])
        vm, _, nv = mean_sd(victim)
        bm, bsd, _ = mean_sd(base)
        tm = mean_sd(trained_on)[0] if trained_on else float("nan")
        out.append(DiceBaseline(variant, arch, vm, bm, bsd, nv, min_gain, tm))
    return out


def _weak(baselines: Sequence[DiceBaseline]) -> list[DiceBaseline]:
    """Victims that barely segment; the untrained-victim control is not meant to segment and
    is not a victim to warn about."""
    from napari_invert.threat_models import ArchKey

    return [b for b in baselines if b.barely_segments and not ArchKey.parse(b.arch).is_control]


def _dice_vs_trivial(b: DiceBaseline) -> str:
    """E.g. ``SegNet (skull_stripped) 0.37 vs 0.35``: unseen-subject Dice, victim vs trivial predictor."""
    return f"{_ARCH.get(b.arch, b.arch)} ({b.variant}) {b.victim_unseen:.2f} vs {b.baseline_unseen:.2f}"


def barely_segments_warnings(baselines: Sequence[DiceBaseline]) -> list[str]:
    """One banner (or none) naming every victim whose unseen-subject Dice is close to the
    trivial predictor's (within each one's ``min_gain``)."""
    weak = _weak(baselines)
    if not weak:
        return []
    which = "; ".join(
        _dice_vs_trivial(b)
        + (
            f" (memorised: {b.victim_trained_on:.2f} on its training subjects)"
            if b.failure == "memorised"
            else ""
        )
        for b in weak
    )
    memorised = [b for b in weak if b.failure == "memorised"]
    implications = (
        " Feature-inversion results still hold (that attack works on untrained networks too); membership "
        "inference and the utility axis of the defences do not."
        if len(memorised) < len(weak)
        else ""
    )
    if memorised:
        implications += f" Memorised victims: {MEMORISED_IMPLICATIONS}"
    return [
        f"{'The victim barely segments' if len(weak) == 1 else f'{len(weak)} victims barely segment'}: "
        f"mean Dice on unseen subjects less than {weak[0].min_gain:.2f} above a trivial predictor that "
        f"ignores the image (the majority label of the victim's training labels at each voxel): {which}. "
        "Reconstruction Dice and comparisons with the paper's Dice mean little for such victims; "
        + (
            "train them longer (segmenter_training.steps) before drawing conclusions from Dice."
            if len(memorised) < len(weak)
            else "a memorised victim needs spatial augmentation (segmenter_training.rotate_deg, "
            "scale_fraction, shift_voxels) or more training subjects, not more steps."
        )
        + implications
        + (
            " For an audited model ('user', trained outside napari-invert): check first that the audit's "
            "preprocess: block (voxel_mm, normalisation, orientation) matches how it was trained."
            if any(b.arch == "user" for b in weak)
            else ""
        )
    ]


def victim_warnings(baselines: Sequence[DiceBaseline], convergence: dict[str, Any]) -> list[str]:
    """The report's banners about victims that do not segment: one per concern, not two.

    ``convergence`` is :func:`napari_invert.study.convergence.victim_segmentation_check` (per
    fold, from the study's own records). When every victim that barely segments with the folds
    pooled (:func:`barely_segments_warnings`) also fails that per-fold check, the pooled figures
    become one line of the per-fold banner; otherwise each banner names different victims and
    both are returned (per-fold first).
    """
    out: list[str] = []
    if not convergence.get("ok", True):
        lines = [line.strip() for line in convergence["message"].splitlines() if line.strip()]
        lines[0] = lines[0].removeprefix("WARNING: ")  # the report adds its own "Warning."
        out.append("\n".join(lines))
    pooled = barely_segments_warnings(baselines)
    if not pooled:
        return out
    weak = _weak(baselines)
    failing = {(r["variant"], r["arch"]) for r in convergence.get("failing", [])}
    if out and all((b.variant, b.arch) in failing for b in weak):
        which = "; ".join(_dice_vs_trivial(b) for b in weak)
        out[0] += f"\nFolds pooled (Dice on the unseen originals vs the trivial predictor): {which}."
        return out
    return out + pooled
