"""Utility and privacy of one defended victim in one fold (per subject, for pooling).

Every number says which threat model it answers:

* **utility**: the victim's mean Dice (foreground classes) on subjects it never trained on
  (the fold's held-out non-members when the splits have them, else the attacker's
  subjects, whom the victim never saw either);
* **feature inversion** (the attacker reads the exposed activations of a scan): for each
  member's reconstruction, the rank of the true original among all candidates by windowed
  SSIM inside the candidate's brain mask (top-1 vs chance ``1/M``), and the SSIM gain over
  the attacker's prior (its mean image); with held-out subjects also the same gain for
  non-members (member minus non-member difference);
* **training-data leakage** (the attacker has the weights and a candidate scan with its
  labels): membership inference with :mod:`napari_invert.membership`'s threshold attacks
  (:func:`membership_hook`), members versus non-members (held out when the splits have them,
  else the attacker's subjects, non-members of the victim too); AUC 0.5 = chance. Should
  that module be missing, the Dice-threshold AUC computed here is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_invert.metrics.dice import mean_dice
from napari_invert.models.base import Segmenter
from napari_invert.models.factory import predict


def victim_dice(model: Segmenter, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[float]:
    """Mean foreground Dice of ``model`` (deployed, defence included) on each subject."""
    return [mean_dice(predict(model, img), lab, model.n_classes) for img, lab in zip(images, labels)]


def auc_mann_whitney(positive: Sequence[float], negative: Sequence[float]) -> float:
    """ROC AUC of scores where ``positive`` should score higher (ties count 1/2); NaN if empty.

    Non-finite scores are dropped, then :func:`napari_invert.identify.intervals.roc_auc`.
    """
    from napari_invert.identify.intervals import roc_auc

    pos = np.asarray(positive, dtype=float).ravel()
    neg = np.asarray(negative, dtype=float).ravel()
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    return roc_auc(pos, neg)


@dataclass
class _Candidate:
    subject_id: str
    image: np.ndarray
    labels: np.ndarray | None


def membership_hook(
    model: Segmenter,
    members: Sequence[tuple[str, np.ndarray, np.ndarray]],
    non_members: Sequence[tuple[str, np.ndarray, np.ndarray]],
    context: dict[str, Any],
) -> dict[str, Any] | None:
    """Membership inference against a defended victim with :mod:`napari_invert.membership`.

    ``members`` / ``non_members``: ``(subject_id, image, labels)``. Runs the membership
    module's threshold attacks (``context["attacks"]``, default loss and Dice thresholds)
    on the deployed victim; the likelihood-ratio attacks are not run here because their
    shadow segmenters would have to be retrained with every defence. Returns
    ``{"attack", "auc", "member_scores", "non_member_scores", "attacks": {name: auc}}``
    (scores: higher = member) or ``None`` when the membership module is unavailable.
    """
    try:
        from napari_invert.identify.intervals import roc_auc
        from napari_invert.membership.attacks import THRESHOLD_ATTACKS, run_attacks
        from napari_invert.membership.signals import score_subjects
    except ImportError:  # pragma: no cover - the module ships with the package
        return None
    wanted = [
        a for a in context.get("attacks", ("loss_threshold", "dice_threshold")) if a in THRESHOLD_ATTACKS
    ]
    if not wanted or not members or not non_members:
        return None
    candidates = [_Candidate(*m) for m in members] + [_Candidate(*n) for n in non_members]
    signals = score_subjects(model, candidates)
    attacks = run_attacks(signals, wanted, None)
    n = len(members)
    aucs = {name: float(roc_auc(a["score"][:n], a["score"][n:])) for name, a in attacks.items()}
    primary = wanted[0]
    score = np.asarray(attacks[primary]["score"], dtype=float)
    return {
        "attack": f"{primary} (napari_invert.membership, no shadows)",
        "auc": aucs[primary],
        "member_scores": score[:n].tolist(),
        "non_member_scores": score[n:].tolist(),
        "attacks": aucs,
    }


def feature_inversion(
    recons: np.ndarray,
    true_index: Sequence[int],
    originals: np.ndarray,
    masks: np.ndarray,
    prior: np.ndarray,
    data_range: float,
) -> dict[str, Any]:
    """Re-identification and SSIM gain of reconstructions ``(N, X, Y, Z)``.

    ``originals``/``masks`` ``(M, X, Y, Z)`` are all candidates; ``true_index[i]`` is the
    column of reconstruction ``i``'s subject. Returns per-row lists ``rank``, ``top1``
    (0/1), ``ssim_true``, ``ssim_prior``, ``ssim_gain`` and ``n_candidates``.
    """
    from napari_invert.identify import rank_true
    from napari_invert.metrics import ssim_matrix

    t = np.asarray(true_index, dtype=int)
    sim = np.asarray(ssim_matrix(recons, originals, data_range=data_range, masks=masks), dtype=float)
    worst = float(np.nanmin(sim)) - 1.0 if np.isfinite(sim).any() else 0.0
    ranks = rank_true(np.where(np.isfinite(sim), sim, worst), t)
    prior_sim = np.asarray(
        ssim_matrix(prior[None], originals, data_range=data_range, masks=masks), dtype=float
    )[0]
    true = sim[np.arange(len(t)), t]
    prior_true = prior_sim[t]
    return {
        "n_candidates": int(originals.shape[0]),
        "rank": [int(r) for r in ranks],
        "top1": [int(r == 1) for r in ranks],
        "ssim_true": [float(v) for v in true],
        "ssim_prior": [float(v) for v in prior_true],
        "ssim_gain": [float(a - b) for a, b in zip(true, prior_true)],
    }
