"""Membership inference: the **training-data leakage** threat model.

Given a victim segmenter's weights and a candidate scan with its labels, decide whether the
candidate was one of its training subjects.

* :mod:`~napari_invert.membership.signals`: per-subject loss, Dice and confidence;
* :mod:`~napari_invert.membership.shadows`: the attacker's shadow segmenters;
* :mod:`~napari_invert.membership.attacks`: threshold and likelihood-ratio (LiRA) attacks;
* :mod:`~napari_invert.membership.study`: one fold of a study -> ``membership.json``;
* :mod:`~napari_invert.membership.pooled`: all folds of an architecture pooled.
"""

from napari_invert.membership.attacks import (
    DESCRIPTIONS,
    LIRA_ATTACKS,
    THRESHOLD_ATTACKS,
    ShadowSignals,
    calibrate_threshold,
    lira_calibration,
    lira_global,
    lira_offline,
    run_attacks,
)
from napari_invert.membership.pooled import load_membership_results, pool_membership, write_pooled_membership
from napari_invert.membership.shadows import ShadowModel, shadow_assignment, train_shadows
from napari_invert.membership.signals import (
    SIGNALS,
    SignalScores,
    foreground_dice,
    member_score,
    score_subjects,
    score_volumes,
)
from napari_invert.membership.study import THREAT_MODEL, run_membership_inference, untrained_like

__all__ = [
    "DESCRIPTIONS",
    "LIRA_ATTACKS",
    "SIGNALS",
    "THREAT_MODEL",
    "THRESHOLD_ATTACKS",
    "ShadowModel",
    "ShadowSignals",
    "SignalScores",
    "calibrate_threshold",
    "foreground_dice",
    "lira_calibration",
    "lira_global",
    "lira_offline",
    "load_membership_results",
    "member_score",
    "pool_membership",
    "run_attacks",
    "run_membership_inference",
    "score_subjects",
    "score_volumes",
    "shadow_assignment",
    "train_shadows",
    "untrained_like",
    "write_pooled_membership",
]
