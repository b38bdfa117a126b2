"""Two-group statistics with honest uncertainty for small cohorts.

Used for membership inference (members = positives, non-members = negatives) and for every
"members minus non-members" comparison. All functions take two 1-D samples: ``pos`` (or
``a``) and ``neg`` (or ``b``); a higher score means "more positive".

* :func:`roc_curve` / :func:`roc_auc`: empirical ROC and its area, the Mann-Whitney
  statistic ``P(pos > neg) + 0.5 P(pos == neg)`` (ties count one half).
* :func:`auc_interval`: percentile bootstrap interval of the AUC, resampling positives
  and negatives separately (stratified: every resample keeps both group sizes).
* :func:`auc_permutation_p`: one-sided permutation p-value for "AUC > 0.5" (exact
  enumeration when the number of relabellings is small, else Monte Carlo with the +1
  correction).
* :func:`tpr_at_fpr` and :func:`fpr_support`: TPR at a fixed low FPR, with what the
  number of negatives supports (with 10 negatives the lowest non-zero FPR is 0.1).
* :func:`difference_interval`: mean difference with bootstrap interval and two-sided
  permutation p-value.
* :func:`mean_interval`: percentile bootstrap interval of one sample's mean (used for paired
  differences by :mod:`.paired` and for the frontier's utility and gains).
* :func:`auc_bootstrap` / :func:`percentile_interval`: the bootstrap AUCs behind
  :func:`auc_interval` and the interval of any bootstrap sample (e.g. a mean over folds).
* :func:`clopper_pearson` and :func:`binomial_sf`: exact interval of a rate ``k/n`` and
  the chance of ``k`` or more hits by guessing (re-identification against chance).

This module is the ONE implementation of these bootstraps in napari-invert: other modules
call it rather than resampling on their own.

Every random draw comes from ``numpy.random.default_rng(seed)``: results are reproducible.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "AucSummary",
    "Difference",
    "auc_bootstrap",
    "auc_interval",
    "auc_permutation_p",
    "auc_summary",
    "binomial_sf",
    "clopper_pearson",
    "difference_interval",
    "fpr_support",
    "mean_interval",
    "minimum_detectable_auc",
    "percentile_interval",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
]


def _sample(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: empty sample")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or Inf")
    return arr


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


# -- ROC -----------------------------------------------------------------------------------


def roc_curve(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Empirical ROC: decide "positive" when ``score >= threshold``.

    Returns ``(fpr, tpr, thresholds)``: one point per distinct score (descending), preceded
    by ``(0, 0)`` at threshold ``+inf``; the last point is ``(1, 1)``. Tied scores move
    FPR and TPR together (a diagonal step), so the trapezoid area equals :func:`roc_auc`.
    """
    p, n = _sample(pos, "pos"), _sample(neg, "neg")
    thresholds = np.unique(np.concatenate([p, n]))[::-1]
    tp = np.searchsorted(np.sort(-p), -thresholds, side="right")  # #{p >= t}
    fp = np.searchsorted(np.sort(-n), -thresholds, side="right")
    fpr = np.concatenate([[0.0], fp / n.size])
    tpr = np.concatenate([[0.0], tp / p.size])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def roc_auc(pos: Any, neg: Any) -> float:
    """Area under the ROC curve = ``P(pos > neg) + 0.5 * P(pos == neg)`` in [0, 1].

    Computed from mid-ranks (Mann-Whitney U / (n_pos * n_neg)), exact with ties.
    """
    p, n = _sample(pos, "pos"), _sample(neg, "neg")
    return float(_auc_rows(p[None], n[None])[0])


def _midranks(x: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based, ties averaged) along the last axis of a 2-D array."""
    order = np.argsort(x, axis=1, kind="mergesort")
    sorted_x = np.take_along_axis(x, order, axis=1)
    ranks = np.empty_like(x, dtype=np.float64)
    m = x.shape[1]
    for row in range(x.shape[0]):
        s = sorted_x[row]
        # start/end of each tie group in the sorted row
        starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
        ends = np.concatenate([starts[1:], [m]])
        mid = (starts + ends + 1) / 2.0  # average of 1-based positions starts+1..ends
        r = np.repeat(mid, ends - starts)
        ranks[row, order[row]] = r
    return ranks


def _auc_rows(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """AUC of each row pair: ``p`` is ``(R, n_pos)``, ``n`` is ``(R, n_neg)``."""
    n_pos, n_neg = p.shape[1], n.shape[1]
    ranks = _midranks(np.concatenate([p, n], axis=1))
    u = ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


# -- intervals and tests for the AUC ------------------------------------------------------------


def percentile_interval(samples: Any, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples`` (1-D)."""
    _check_level(level)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.asarray(samples, dtype=np.float64), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _resampled_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of ``x`` resampled with replacement (same size), shape ``(n_boot,)``."""
    return x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)


def mean_interval(x: Any, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of one sample ``x`` (finite values only).

    For paired data pass the per-pair differences (as :mod:`.paired` does).
    """
    _check_level(level)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    v = _sample(x, "x")
    return percentile_interval(_resampled_means(v, n_boot, np.random.default_rng(seed)), level)


def auc_bootstrap(pos: Any, neg: Any, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap AUCs, stratified: ``n_pos`` positives and ``n_neg`` negatives
    drawn with replacement from their own group. Shape ``(n_boot,)``, values in [0, 1]."""
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    p, n = _sample(pos, "pos"), _sample(neg, "neg")
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    chunk = 512
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        bp = p[rng.integers(0, p.size, size=(r, p.size))]
        bn = n[rng.integers(0, n.size, size=(r, n.size))]
        aucs[start : start + r] = _auc_rows(bp, bn)
    return aucs


def auc_interval(
    pos: Any, neg: Any, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (stratified, see :func:`auc_bootstrap`)."""
    _check_level(level)
    return percentile_interval(auc_bootstrap(pos, neg, n_boot, seed), level)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) ``level`` interval of the rate ``k/n`` (``0 <= k <= n``, ``n >= 1``)."""
    from scipy.stats import beta

    _check_level(level)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - alpha, k + 1, n - k))
    return lo, hi


def binomial_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``: the chance of ``k`` or more hits by guessing
    (1.0 when ``n == 0`` or ``k == 0``)."""
    from scipy.stats import binom

    if n == 0 or k == 0:
        return 1.0
    return float(binom.sf(k - 1, n, p))


def _relabellings(n_total: int, n_pos: int, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Index sets of the positives: every subset when there are at most ``n_perm`` of them
    (exact), otherwise ``n_perm`` random ones. Returns ``(indices (R, n_pos), exact)``."""
    if math.comb(n_total, n_pos) <= n_perm:
        return np.array(list(itertools.combinations(range(n_total), n_pos)), dtype=np.int64), True
    idx = np.argsort(rng.random((n_perm, n_total)), axis=1)[:, :n_pos]
    return idx, False


def auc_permutation_p(pos: Any, neg: Any, n_perm: int = 2000, seed: int = 0) -> float:
    """One-sided permutation p-value of ``AUC >= observed`` when group labels are exchangeable.

    Exact (all ``C(n_pos + n_neg, n_pos)`` relabellings, the observed one included) when
    that number is ``<= n_perm``; otherwise ``(1 + #{AUC_perm >= AUC_obs}) / (1 + n_perm)``.
    """
    p, n = _sample(pos, "pos"), _sample(neg, "neg")
    observed = float(_auc_rows(p[None], n[None])[0])
    pooled = np.concatenate([p, n])
    rng = np.random.default_rng(seed)
    idx, exact = _relabellings(pooled.size, p.size, n_perm, rng)
    is_pos = np.zeros((idx.shape[0], pooled.size), dtype=bool)
    np.put_along_axis(is_pos, idx, True, axis=1)
    perm_p = np.stack([pooled[row] for row in is_pos])
    perm_n = np.stack([pooled[~row] for row in is_pos])
    aucs = _auc_rows(perm_p, perm_n)
    hits = int(np.sum(aucs >= observed - 1e-12))
    if exact:
        return hits / idx.shape[0]
    return (1 + hits) / (1 + idx.shape[0])


def minimum_detectable_auc(n_pos: int, n_neg: int, alpha: float = 0.05) -> float:
    """Smallest AUC a one-sided test at level ``alpha`` can tell from 0.5 with these group
    sizes (normal approximation of the Mann-Whitney U under the null, no ties)."""
    sd = math.sqrt(n_pos * n_neg * (n_pos + n_neg + 1) / 12.0) / (n_pos * n_neg)
    return min(1.0, 0.5 + NormalDist().inv_cdf(1.0 - alpha) * sd)


# -- TPR at low FPR -----------------------------------------------------------------------------


def fpr_support(n_pos: int, n_neg: int, fpr: float) -> dict[str, Any]:
    """What ``n_pos`` positives and ``n_neg`` negatives support at a target FPR.

    Returns ``{"n_pos", "n_neg", "fpr", "min_nonzero_fpr" (= 1/n_neg), "tpr_step"
    (= 1/n_pos), "supported" (fpr >= 1/n_neg), "min_detectable_auc", "statement"}``.
    """
    if n_pos < 1 or n_neg < 1:
        raise ValueError("need at least one positive and one negative")
    step = 1.0 / n_neg
    supported = fpr >= step - 1e-12
    mda = minimum_detectable_auc(n_pos, n_neg)
    if supported:
        text = (
            f"{n_neg} non-members: FPR moves in steps of {step:.3g}, so TPR at FPR <= {fpr:g} "
            f"rests on at most {math.floor(fpr * n_neg + 1e-9)} false positive(s)"
        )
    else:
        text = (
            f"{n_neg} non-members cannot support FPR {fpr:g}: the lowest non-zero FPR is "
            f"1/{n_neg} = {step:.3g}, so TPR at FPR <= {fpr:g} is the TPR at FPR = 0 "
            f"(strictest threshold); at least {math.ceil(1.0 / fpr - 1e-9)} non-members are needed"
        )
    text += (
        f"; with {n_pos} members vs {n_neg} non-members an AUC below {mda:.2f} cannot be "
        "told from chance (one-sided 5 % test)"
    )
    return {
        "n_pos": int(n_pos),
        "n_neg": int(n_neg),
        "fpr": float(fpr),
        "min_nonzero_fpr": step,
        "tpr_step": 1.0 / n_pos,
        "supported": bool(supported),
        "min_detectable_auc": mda,
        "statement": text,
    }


def tpr_at_fpr(pos: Any, neg: Any, fpr: float) -> float:
    """Highest TPR among ROC points (:func:`roc_curve`) whose FPR is ``<= fpr``."""
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    f, t, _ = roc_curve(pos, neg)
    return float(np.max(t[f <= fpr + 1e-12]))


# -- one record for a score -------------------------------------------------------------------


@dataclass
class AucSummary:
    """AUC with its bootstrap interval, permutation p-value, TPR at a fixed FPR and the
    ROC curve; ``support`` is :func:`fpr_support`'s record."""

    auc: float
    ci: tuple[float, float]
    p_value: float
    fpr: float
    tpr_at_fpr: float
    support: dict[str, Any]
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "auc": self.auc,
            "auc_ci": [self.ci[0], self.ci[1]],
            "ci_level": self.level,
            "auc_p_value": self.p_value,
            "fpr": self.fpr,
            "tpr_at_fpr": self.tpr_at_fpr,
            "tpr_at_fpr_supported": self.support["supported"],
            "support": self.support,
            "roc": {"fpr": self.roc_fpr.tolist(), "tpr": self.roc_tpr.tolist()},
        }


def auc_summary(
    pos: Any,
    neg: Any,
    fpr: float = 0.05,
    n_boot: int = 2000,
    n_perm: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> AucSummary:
    """Everything reported for one score separating ``pos`` from ``neg``."""
    p, n = _sample(pos, "pos"), _sample(neg, "neg")
    f, t, _ = roc_curve(p, n)
    return AucSummary(
        auc=roc_auc(p, n),
        ci=auc_interval(p, n, n_boot=n_boot, seed=seed, level=level),
        p_value=auc_permutation_p(p, n, n_perm=n_perm, seed=seed + 1),
        fpr=float(fpr),
        tpr_at_fpr=tpr_at_fpr(p, n, fpr),
        support=fpr_support(p.size, n.size, fpr),
        roc_fpr=f,
        roc_tpr=t,
        level=level,
    )


# -- differences of means -----------------------------------------------------------------------


@dataclass
class Difference:
    """``mean(a) - mean(b)`` with a percentile bootstrap interval (each group resampled
    on its own) and a two-sided permutation p-value."""

    difference: float
    ci: tuple[float, float]
    p_value: float
    n_a: int
    n_b: int
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "difference": self.difference,
            "ci": [self.ci[0], self.ci[1]],
            "ci_level": self.level,
            "p_value": self.p_value,
            "n_a": self.n_a,
            "n_b": self.n_b,
        }


def difference_interval(
    a: Any,
    b: Any,
    n_boot: int = 2000,
    n_perm: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Difference:
    """Mean difference ``mean(a) - mean(b)``, its bootstrap interval and a two-sided
    permutation p-value (``|diff_perm| >= |diff_obs|``; exact enumeration when the number
    of relabellings is ``<= n_perm``, else Monte Carlo with the +1 correction)."""
    _check_level(level)
    x, y = _sample(a, "a"), _sample(b, "b")
    observed = float(x.mean() - y.mean())
    rng = np.random.default_rng(seed)
    boot_x = _resampled_means(x, n_boot, rng)  # x first, then y: the draws' order is fixed
    lo, hi = percentile_interval(boot_x - _resampled_means(y, n_boot, rng), level)
    pooled = np.concatenate([x, y])
    idx, exact = _relabellings(pooled.size, x.size, n_perm, np.random.default_rng(seed + 1))
    total = pooled.sum()
    sum_a = pooled[idx].sum(axis=1)
    diffs = sum_a / x.size - (total - sum_a) / y.size
    hits = int(np.sum(np.abs(diffs) >= abs(observed) - 1e-12 * max(1.0, abs(observed))))
    p = hits / idx.shape[0] if exact else (1 + hits) / (1 + idx.shape[0])
    return Difference(observed, (float(lo), float(hi)), float(p), int(x.size), int(y.size), level)
