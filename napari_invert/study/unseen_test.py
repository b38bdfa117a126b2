"""The victim's test on the fold's unseen subjects: the verdict "does this victim segment?".

A victim is trained on the fold's private subjects, part of which it holds out to pick its
best checkpoint and to stop on a plateau (:mod:`napari_invert.models.validation`). That
validation score is a poor judge of the finished network: it is the *maximum* over every
evaluation of the curve (optimistic), and on a small cohort it rests on one or two subjects
(noisy: the same settings with another seed can move it by 0.04 Dice).

The fold's attack subjects are a proper test set for the victim: it never trained on them
and they played no part in choosing its checkpoint. :func:`score_on_unseen` scores the finished
victim on each of them, beside the majority-label baseline (the most frequent label of the
victim's own training labels at each voxel, an "atlas" that ignores the image), and judges
it with the same rule as the validation verdict (``min_validation_dice``,
``min_dice_gain``) on the paired per-subject gains. :func:`attach_unseen_test` stores the result as
the ``test`` block of the victim's convergence record; the study's one check
(:func:`napari_invert.study.convergence.victim_segmentation_check`) then judges the victim
on it, and on its validation score only when there is no test.

Threat model: none. This is the victim's *utility*; it decides whether membership inference
and the defences' utility axis mean anything (feature inversion needs no trained victim).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import read_json, write_json_atomic

__all__ = [
    "TEST_FORMAT",
    "TEST_ROLE",
    "attach_unseen_test",
    "ensure_unseen_test",
    "failure_mode",
    "score_on_unseen",
    "unseen_test_is_current",
    "unseen_verdict",
]

#: version of the ``test`` block; an older block is recomputed on the next run (2: adds the
#: Dice on the training subjects and the failure mode)
TEST_FORMAT = 2

#: what the test subjects are, as the record and every message say it
TEST_ROLE = "the fold's unseen (attack) subjects: never trained on, not used to pick the checkpoint"


def unseen_verdict(
    victim_dice: Sequence[float], baseline_dice: Sequence[float], min_dice: float, min_gain: float
) -> dict[str, Any]:
    """Judge a victim on paired per-subject Dice (victim vs majority-label baseline).

    ``victim_dice`` / ``baseline_dice``: mean foreground Dice in [0, 1] per test subject
    (same order; NaN subjects are dropped in pairs). The victim segments when its mean Dice
    is at least ``min_dice`` AND its mean gain over the baseline is at least ``min_gain``
    (the validation verdict's rule). Returns ``{"n", "mean_dice", "mean_baseline",
    "mean_gain", "gain_ci95": [lo, hi] (percentile bootstrap of the mean paired gain, 2000
    resamples, seed 0), "segments", "reason"}``; with no finite pair ``segments`` is None.
    """
    from napari_invert.identify.intervals import mean_interval

    v = np.asarray(victim_dice, dtype=np.float64)
    b = np.asarray(baseline_dice, dtype=np.float64)
    if v.shape != b.shape:
        raise ValueError(f"unseen_verdict: {v.size} victim Dice values but {b.size} baseline values")
    keep = np.isfinite(v) & np.isfinite(b)
    v, b = v[keep], b[keep]
    if v.size == 0:
        return {
            "n": 0,
            "mean_dice": None,
            "mean_baseline": None,
            "mean_gain": None,
            "gain_ci95": None,
            "segments": None,
            "reason": "no unseen subject with labels to test the victim on",
        }
    gains = v - b
    mean_v, mean_b, mean_g = float(v.mean()), float(b.mean()), float(gains.mean())
    lo, hi = mean_interval(gains) if v.size > 1 else (mean_g, mean_g)
    where = f"{v.size} unseen subject{'s' if v.size > 1 else ''}"
    problems = []
    if mean_v < min_dice:
        problems.append(f"Dice {mean_v:.2f} on {where} is below the threshold {min_dice:.2f}")
    if mean_g < min_gain:
        problems.append(
            f"Dice {mean_v:.2f} on {where} is not clearly above the majority-label baseline "
            f"{mean_b:.2f} (gain {mean_g:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]; needs +{min_gain:.2f})"
        )
    if problems:
        reason = "; ".join(problems)
    else:
        reason = (
            f"Dice {mean_v:.2f} on {where} vs majority-label baseline {mean_b:.2f} "
            f"(gain {mean_g:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}])"
        )
    return {
        "n": int(v.size),
        "mean_dice": mean_v,
        "mean_baseline": mean_b,
        "mean_gain": mean_g,
        "gain_ci95": [float(lo), float(hi)],
        "segments": not problems,
        "reason": reason,
    }


def failure_mode(
    segments: bool | None, fitted_dice: float | None, unseen_dice: float | None, min_gain: float
) -> str | None:
    """Why a victim does not segment: ``"memorised"`` when its mean Dice on the subjects it
    trained on exceeds its mean Dice on unseen subjects by at least ``min_gain`` (it fits
    its training set, not the task: the case membership inference exploits), else
    ``"learned_little"``. None when it segments or was not judged. Dice values in [0, 1]."""
    if segments is not False:
        return None
    if fitted_dice is None or unseen_dice is None or not np.isfinite([fitted_dice, unseen_dice]).all():
        return "learned_little"
    return "memorised" if fitted_dice - unseen_dice >= min_gain else "learned_little"


def score_on_unseen(
    model: Any,
    train_labels: Sequence[np.ndarray],
    test_images: Sequence[np.ndarray],
    test_labels: Sequence[np.ndarray],
    test_ids: Sequence[str],
    min_dice: float,
    min_gain: float,
    train_images: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Score a trained victim on unseen subjects and judge it (:func:`unseen_verdict`).

    ``model``: a :class:`~napari_invert.models.Segmenter` (its best checkpoint; it runs where
    its parameters are);
    ``train_labels``: the label maps ``(X, Y, Z)`` it took gradient steps on (the baseline's
    atlas); ``test_images`` / ``test_labels`` / ``test_ids``: the unseen subjects, images
    normalised like the training images; ``train_images`` (optional, same order as
    ``train_labels``): also score the victim on its training subjects, which tells a victim
    that memorised them from one that learned little (:func:`failure_mode`). Returns the
    record's ``test`` block: the verdict's fields plus ``subjects``, ``role``, ``dice`` and
    ``baseline_dice`` per subject, ``fitted_dice`` (per training subject; empty without
    ``train_images``), ``mean_fitted_dice``, ``generalisation_gap`` (fitted minus unseen
    mean Dice) and ``failure``.
    """
    from napari_invert.defences.measures import victim_dice
    from napari_invert.metrics.dice import majority_baseline_dice

    if not (len(test_images) == len(test_labels) == len(test_ids)):
        raise ValueError("score_on_unseen: images, labels and ids differ in number")
    if train_images is not None and len(train_images) != len(train_labels):
        raise ValueError("score_on_unseen: train_images and train_labels differ in number")
    victim = victim_dice(model, test_images, test_labels)
    n_classes = int(model.n_classes)
    baseline = majority_baseline_dice([np.asarray(t) for t in train_labels], list(test_labels), n_classes)
    verdict = unseen_verdict(victim, baseline, min_dice, min_gain)
    fitted = [] if train_images is None else victim_dice(model, train_images, train_labels)
    finite = [v for v in fitted if np.isfinite(v)]
    mean_fitted = float(np.mean(finite)) if finite else None
    unseen = verdict["mean_dice"]
    gap = None if mean_fitted is None or unseen is None else mean_fitted - unseen
    return {
        "format": TEST_FORMAT,
        "subjects": list(test_ids),
        "role": TEST_ROLE,
        "dice": [float(x) for x in victim],
        "baseline_dice": [float(x) for x in baseline],
        **verdict,
        "fitted_dice": fitted,
        "mean_fitted_dice": mean_fitted,
        "generalisation_gap": gap,
        "failure": failure_mode(verdict["segments"], mean_fitted, unseen, min_gain),
    }


def unseen_test_is_current(record: dict[str, Any], test_ids: Sequence[str]) -> bool:
    """True when ``record`` (a victim's convergence record) holds a test of the network it
    describes (same ``steps_run`` and ``best_step``) on exactly ``test_ids``, in the current
    :data:`TEST_FORMAT`."""
    test = record.get("test")
    if not isinstance(test, dict):
        return False
    return (
        test.get("format") == TEST_FORMAT
        and test.get("subjects") == list(test_ids)
        and test.get("for_steps_run") == record.get("steps_run")
        and test.get("for_best_step") == record.get("best_step")
    )


def attach_unseen_test(record_path: str | Path, test: dict[str, Any]) -> dict[str, Any]:
    """Store ``test`` as the ``test`` block of the convergence record at ``record_path``
    (atomic rewrite), stamped with the record's ``steps_run`` / ``best_step`` so a victim
    trained further is tested again. Returns the updated record."""
    record = read_json(record_path)
    stamp = {"for_steps_run": record.get("steps_run"), "for_best_step": record.get("best_step")}
    record["test"] = {**test, **stamp}
    write_json_atomic(record_path, record)
    return record


def ensure_unseen_test(
    record_path: str | Path,
    model: Any,
    fitted: Sequence[Any],
    unseen: Sequence[Any],
    min_dice: float,
    min_gain: float,
) -> dict[str, Any] | None:
    """Test the victim on ``unseen`` subjects unless its convergence record already holds a
    current test. ``fitted`` / ``unseen``: objects with ``subject_id``, ``image`` and
    ``labels`` (the subjects it took gradient steps on / the fold's unseen ones). Returns the
    new ``test`` block, or None when nothing was done: no record (validation off, or a victim
    trained by an older version that is not resumed), training not finished, a current test,
    no unseen subject, or label maps missing."""
    path = Path(record_path)
    if not path.exists() or not unseen:
        return None
    record = read_json(path)
    ids = [s.subject_id for s in unseen]
    if record.get("status") != "finished" or unseen_test_is_current(record, ids):
        return None
    if not fitted or any(s.labels is None for s in (*fitted, *unseen)):
        return None
    test = score_on_unseen(
        model,
        [np.asarray(s.labels) for s in fitted],
        [s.image for s in unseen],
        [s.labels for s in unseen],
        ids,
        min_dice,
        min_gain,
        train_images=[s.image for s in fitted],
    )
    attach_unseen_test(path, test)
    return test
