"""Membership attacks: from per-subject signals to a "was it trained on?" score and decision.

Every attack returns, per candidate, a score where HIGHER means "more likely a training
subject" (so the ROC AUC of members vs non-members is directly the attack's AUC), and a
hard decision with a threshold chosen WITHOUT looking at the candidates' truth:

* **Threshold attacks** (``loss_threshold``, ``dice_threshold``, ``confidence_threshold``):
  the score is the victim's own fit to the candidate (:func:`~napari_invert.membership.
  signals.member_score`). No calibration is needed for the AUC; the decision threshold is
  calibrated on the attacker's shadow data (IN vs OUT pairs of its own subjects), maximising
  TPR - FPR there (:func:`calibrate_threshold`).
* **LiRA offline** (Carlini et al. 2022, "Membership inference attacks from first
  principles", offline variant): candidates are never in the attacker's data, so only the
  OUT distribution of each candidate is observable: the shadows' scores on it. The score is
  ``z = (s_victim - mean_out) / sd_out`` (a one-sided test against a Gaussian OUT model;
  monotone in the likelihood ratio's offline form ``1 - P(Z > s)``). ``sd_out`` is one
  global value pooled over all candidates' and attack subjects' OUT residuals (Carlini's
  "global variance", recommended for few shadows). Decision: ``z >= Phi^-1(1 - fpr)``, an
  FPR of ``fpr`` under the OUT model, no calibration needed.
* **LiRA global** (globally calibrated IN distribution): on its own subjects the attacker
  sees both IN and OUT shadow scores and estimates the mean IN-minus-OUT shift ``delta``
  and the IN spread ``sd_in``. Per candidate the IN model is ``N(mean_out + delta, sd_in)``
  and the OUT model ``N(mean_out, sd_out)``; the score is the log likelihood ratio
  ``log N(s; in) - log N(s; out)``. Decision: ``log LR >= 0``.

All LiRA computations use the logit-scaled signal (:func:`member_score`).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from napari_invert.membership.signals import SignalScores, member_score

THRESHOLD_ATTACKS = {
    "loss_threshold": "loss",
    "dice_threshold": "dice",
    "confidence_threshold": "confidence",
}
LIRA_ATTACKS = ("lira_offline", "lira_global")

DESCRIPTIONS = {
    "loss_threshold": "victim's Dice+CE loss on the candidate (lower loss = member)",
    "dice_threshold": "victim's foreground Dice on the candidate (higher Dice = member)",
    "confidence_threshold": "victim's mean true-class confidence (higher = member)",
    "lira_offline": "likelihood ratio vs shadow OUT distribution (offline LiRA, global variance)",
    "lira_global": "likelihood ratio, IN shift calibrated on the attacker's own subjects",
}

_MIN_SD = 1e-6


@dataclass
class ShadowSignals:
    """Signals of the ``K`` shadows: on the candidates (never IN any shadow) and on the
    attacker's ``Na`` own subjects, with ``in_mask (K, Na)`` (IN = trained on)."""

    candidates: list[SignalScores]
    attack: list[SignalScores]
    in_mask: np.ndarray

    @property
    def n_shadows(self) -> int:
        return len(self.candidates)

    def matrix(self, which: str, signal: str) -> np.ndarray:
        """``(K, N)`` member scores (:func:`member_score`) of ``signal`` on ``which``
        (``"candidates"`` or ``"attack"``)."""
        rows = self.candidates if which == "candidates" else self.attack
        return np.stack([member_score(signal, s.signal(signal)) for s in rows])


def calibrate_threshold(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Threshold ``t`` (decide member when ``score >= t``) maximising TPR - FPR on the
    attacker's calibration data (IN = members, OUT = non-members); midway between the two
    scores that bound the best cut."""
    i = np.asarray(in_scores, dtype=np.float64).ravel()
    o = np.asarray(out_scores, dtype=np.float64).ravel()
    if i.size == 0 or o.size == 0:
        raise ValueError("calibration needs IN and OUT scores")
    values = np.unique(np.concatenate([i, o]))
    best_t, best_j = float(values[0]), -np.inf
    for k, t in enumerate(values):
        j = np.mean(i >= t) - np.mean(o >= t)
        if j > best_j + 1e-12:
            lower = values[k - 1] if k > 0 else t - 1.0
            best_t, best_j = float((t + lower) / 2.0), j
    return best_t


def _pooled_sd(groups: list[np.ndarray]) -> tuple[float, int]:
    """Pooled within-group SD and its degrees of freedom (groups of size < 2 add none)."""
    ss, df = 0.0, 0
    for g in groups:
        g = np.asarray(g, dtype=np.float64)
        if g.size >= 2:
            ss += float(np.sum((g - g.mean()) ** 2))
            df += g.size - 1
    return (float(np.sqrt(ss / df)) if df > 0 else float("nan")), df


@dataclass
class LiraCalibration:
    """What the attacker estimated from its shadows (logit-scaled signal units)."""

    signal: str
    sd_out: float
    sd_out_df: int
    delta: float
    sd_in: float
    sd_in_df: int
    n_shadows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in vars(self).items()
        }


def lira_calibration(shadows: ShadowSignals, signal: str) -> LiraCalibration:
    """Global OUT spread, IN-minus-OUT shift and IN spread from the shadows."""
    cand = shadows.matrix("candidates", signal)  # (K, Nc) all OUT
    att = shadows.matrix("attack", signal)  # (K, Na)
    mask = shadows.in_mask
    out_groups = [cand[:, c] for c in range(cand.shape[1])]
    out_groups += [att[~mask[:, j], j] for j in range(att.shape[1])]
    sd_out, df_out = _pooled_sd(out_groups)
    if not np.isfinite(sd_out):
        raise ValueError("LiRA needs at least 2 shadows (no OUT spread can be estimated)")
    sd_out = max(sd_out, _MIN_SD)
    both = [j for j in range(att.shape[1]) if mask[:, j].any() and (~mask[:, j]).any()]
    if not both:
        raise ValueError("LiRA global: no attacker subject is both IN and OUT of some shadow")
    delta = float(np.mean([att[mask[:, j], j].mean() - att[~mask[:, j], j].mean() for j in both]))
    sd_in, df_in = _pooled_sd([att[mask[:, j], j] for j in range(att.shape[1])])
    if not np.isfinite(sd_in):  # one IN shadow per subject: assume the OUT spread
        sd_in = sd_out
    return LiraCalibration(signal, sd_out, df_out, delta, max(sd_in, _MIN_SD), df_in, shadows.n_shadows)


def _log_normal_pdf(x: np.ndarray, mean: np.ndarray, sd: float) -> np.ndarray:
    return -0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def lira_offline(victim: np.ndarray, shadow_out: np.ndarray, sd_out: float) -> np.ndarray:
    """``(s_victim - mean_out) / sd_out`` per candidate; ``shadow_out`` is ``(K, N)``."""
    return (np.asarray(victim, dtype=np.float64) - shadow_out.mean(axis=0)) / sd_out


def lira_global(victim: np.ndarray, shadow_out: np.ndarray, cal: LiraCalibration) -> np.ndarray:
    """Log likelihood ratio ``log N(s; mean_out + delta, sd_in) - log N(s; mean_out, sd_out)``."""
    s = np.asarray(victim, dtype=np.float64)
    mu_out = shadow_out.mean(axis=0)
    return _log_normal_pdf(s, mu_out + cal.delta, cal.sd_in) - _log_normal_pdf(s, mu_out, cal.sd_out)


def run_attacks(
    victim: SignalScores,
    attacks: list[str],
    shadows: ShadowSignals | None,
    lira_signal: str = "loss",
    fpr: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """Scores and decisions of each attack for the candidates in ``victim``.

    Returns ``{attack: {"score": (N,) higher = member, "decision": (N,) bool or None,
    "threshold": float or None, "threshold_rule": str, "description": str}}`` plus, for
    LiRA attacks, ``"calibration"``. ``shadows``' candidates must be in ``victim``'s order.
    """
    out: dict[str, dict[str, Any]] = {}
    cal: LiraCalibration | None = None
    if shadows is not None and shadows.candidates:
        for s in shadows.candidates:
            if s.subject_ids != victim.subject_ids:
                raise ValueError("shadow and victim scores list different candidates")
    for name in attacks:
        if name in THRESHOLD_ATTACKS:
            signal = THRESHOLD_ATTACKS[name]
            score = member_score(signal, victim.signal(signal))
            threshold, rule = None, "no shadows: no calibrated threshold"
            if shadows is not None and shadows.n_shadows > 0:
                att = shadows.matrix("attack", signal)
                threshold = calibrate_threshold(att[shadows.in_mask], att[~shadows.in_mask])
                rule = "max TPR-FPR on the attacker's shadow IN/OUT subjects"
            out[name] = {
                "signal": signal,
                "score": score,
                "decision": None if threshold is None else score >= threshold,
                "threshold": threshold,
                "threshold_rule": rule,
            }
        elif name in LIRA_ATTACKS:
            if shadows is None or shadows.n_shadows < 2:
                raise ValueError(f"{name}: needs at least 2 shadow segmenters")
            if cal is None:
                cal = lira_calibration(shadows, lira_signal)
            s = member_score(lira_signal, victim.signal(lira_signal))
            shadow_out = shadows.matrix("candidates", lira_signal)
            if name == "lira_offline":
                score = lira_offline(s, shadow_out, cal.sd_out)
                threshold = NormalDist().inv_cdf(1.0 - fpr)
                rule = f"z >= Phi^-1(1 - {fpr:g}): FPR {fpr:g} under the shadow OUT model"
            else:
                score = lira_global(s, shadow_out, cal)
                threshold, rule = 0.0, "log likelihood ratio >= 0"
            out[name] = {
                "signal": lira_signal,
                "score": score,
                "decision": score >= threshold,
                "threshold": float(threshold),
                "threshold_rule": rule,
                "calibration": cal.to_dict(),
            }
        else:
            raise ValueError(f"unknown membership attack '{name}'")
        out[name]["description"] = DESCRIPTIONS[name]
    return out
