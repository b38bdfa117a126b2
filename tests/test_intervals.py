"""ROC, AUC, bootstrap intervals, permutation p-values and TPR at low FPR against answers
computed by hand or by brute force (no sklearn)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from napari_invert.identify.intervals import (
    auc_bootstrap,
    auc_interval,
    auc_permutation_p,
    auc_summary,
    binomial_sf,
    clopper_pearson,
    difference_interval,
    fpr_support,
    mean_interval,
    minimum_detectable_auc,
    percentile_interval,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)


def brute_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(pos > neg) + 0.5 P(pos == neg) by looping over all pairs."""
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else (0.5 if p == n else 0.0)
    return total / (len(pos) * len(neg))


def brute_roc_points(pos: np.ndarray, neg: np.ndarray) -> set[tuple[float, float]]:
    """(FPR, TPR) of the rule ``score >= t`` for every score value t (and t = +inf)."""
    pts = {(0.0, 0.0)}
    for t in np.concatenate([pos, neg]):
        pts.add((float(np.mean(neg >= t)), float(np.mean(pos >= t))))
    return pts


def test_auc_hand_cases() -> None:
    assert roc_auc([1.0], [0.0]) == 1.0
    assert roc_auc([0.0], [1.0]) == 0.0
    assert roc_auc([0.3, 0.3], [0.3, 0.3, 0.3]) == 0.5  # all tied
    assert roc_auc([0.2, 0.8], [0.5]) == 0.5
    assert roc_auc([1, 2, 3], [2]) == pytest.approx((0 + 0.5 + 1) / 3)


def test_auc_matches_brute_force_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        pos = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)
        neg = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)
        assert roc_auc(pos, neg) == pytest.approx(brute_auc(pos, neg), abs=1e-12)


def test_roc_curve_points_and_area() -> None:
    pos = np.array([0.9, 0.7, 0.7, 0.2])
    neg = np.array([0.8, 0.7, 0.1])
    fpr, tpr, thr = roc_curve(pos, neg)
    # thresholds: inf, 0.9, 0.8, 0.7, 0.2, 0.1
    np.testing.assert_allclose(thr[1:], [0.9, 0.8, 0.7, 0.2, 0.1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.25, 0.75, 1, 1])
    assert set(zip(fpr.tolist(), tpr.tolist())) == brute_roc_points(pos, neg)
    # trapezoid area (ties give diagonal steps) equals the Mann-Whitney AUC
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(pos, neg)) == pytest.approx(brute_auc(pos, neg))


def test_tpr_at_fpr_and_support() -> None:
    pos = np.array([0.9, 0.7, 0.7, 0.2])
    neg = np.array([0.8, 0.7, 0.1])
    assert tpr_at_fpr(pos, neg, 0.0) == 0.25  # only 0.9 is above every negative
    assert tpr_at_fpr(pos, neg, 0.4) == 0.25  # 0.8 lets in one negative, no new positive
    assert tpr_at_fpr(pos, neg, 0.7) == 1.0
    s = fpr_support(10, 10, 0.05)
    assert not s["supported"] and s["min_nonzero_fpr"] == pytest.approx(0.1)
    assert "lowest non-zero FPR is 1/10 = 0.1" in s["statement"]
    assert "20 non-members are needed" in s["statement"]
    assert fpr_support(10, 40, 0.05)["supported"]
    assert fpr_support(10, 10, 0.1)["supported"]


def test_minimum_detectable_auc_hand_value() -> None:
    # 10 vs 10: sd(U)/100 = sqrt(100 * 21 / 12) / 100 = 0.13229; 0.5 + 1.6449 * sd
    assert minimum_detectable_auc(10, 10) == pytest.approx(0.5 + 1.644854 * math.sqrt(175) / 100, abs=1e-5)


def test_auc_interval_degenerate_and_reproducible() -> None:
    # perfectly separated: every stratified resample is separated too -> [1, 1]
    assert auc_interval([5, 6, 7], [1, 2], n_boot=500, seed=1) == (1.0, 1.0)
    assert auc_interval([1, 1], [1, 1, 1], n_boot=200) == (0.5, 0.5)
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 30), rng.normal(0, 1, 30)
    a = auc_interval(pos, neg, n_boot=1000, seed=7)
    assert a == auc_interval(pos, neg, n_boot=1000, seed=7)
    auc = roc_auc(pos, neg)
    assert a[0] < auc < a[1]


def test_auc_interval_width_matches_theory() -> None:
    # large binormal sample: the bootstrap sd of the AUC ~ Hanley-McNeil standard error
    rng = np.random.default_rng(5)
    pos, neg = rng.normal(1, 1, 400), rng.normal(0, 1, 400)
    auc = roc_auc(pos, neg)
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    se = math.sqrt((auc * (1 - auc) + 399 * (q1 - auc**2) + 399 * (q2 - auc**2)) / (400 * 400))
    lo, hi = auc_interval(pos, neg, n_boot=2000, seed=0)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)


def brute_perm_p(pos: np.ndarray, neg: np.ndarray) -> float:
    pooled = np.concatenate([pos, neg])
    obs = brute_auc(pos, neg)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), len(pos)):
        mask = np.zeros(len(pooled), bool)
        mask[list(idx)] = True
        total += 1
        hits += brute_auc(pooled[mask], pooled[~mask]) >= obs - 1e-12
    return hits / total


def test_auc_permutation_p_exact_and_monte_carlo() -> None:
    # 2 vs 2, separated: only the observed labelling of C(4,2)=6 reaches AUC 1
    assert auc_permutation_p([3, 4], [1, 2]) == pytest.approx(1 / 6)
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(0.8, 1, 5), rng.normal(0, 1, 5)
    exact = brute_perm_p(pos, neg)
    assert auc_permutation_p(pos, neg, n_perm=252) == pytest.approx(exact)  # C(10,5)=252: exact
    mc = auc_permutation_p(pos, neg, n_perm=4000, seed=3)  # > 252? no: 4000 >= 252 -> exact
    assert mc == pytest.approx(exact)
    mc = auc_permutation_p(pos, neg, n_perm=200, seed=3)  # 200 < 252 -> Monte Carlo
    assert mc == pytest.approx(exact, abs=0.08)


def test_difference_interval_known_answers() -> None:
    d = difference_interval([1, 1, 1], [0, 0, 0])
    assert d.difference == 1.0 and d.ci == (1.0, 1.0)
    # exact two-sided permutation: 2 of C(6,3)=20 relabellings reach |diff| = 1
    assert d.p_value == pytest.approx(2 / 20)
    rng = np.random.default_rng(11)
    a, b = rng.normal(0.3, 1, 2000), rng.normal(0, 1, 2000)
    d = difference_interval(a, b, n_boot=2000, n_perm=500, seed=0)
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert d.difference == pytest.approx(a.mean() - b.mean())
    assert d.ci[1] - d.ci[0] == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert d.p_value == pytest.approx(1 / 501)  # no relabelling reaches a 9-sigma difference
    same = difference_interval(rng.normal(0, 1, 40), rng.normal(0, 1, 40), seed=1)
    assert same.ci[0] < 0 < same.ci[1] or same.p_value < 0.05


def test_summary_record_and_errors() -> None:
    s = auc_summary([0.9, 0.8, 0.4], [0.1, 0.5], fpr=0.5, n_boot=100, n_perm=100)
    d = s.to_dict()
    assert d["auc"] == pytest.approx(5 / 6)
    assert d["tpr_at_fpr"] == pytest.approx(1.0)  # threshold 0.4 admits one of two negatives
    assert d["roc"]["fpr"][0] == 0 and d["roc"]["tpr"][-1] == 1
    with pytest.raises(ValueError, match="empty"):
        roc_auc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([np.nan], [1.0])


def test_mean_interval_known_answers_and_paired_use_it() -> None:
    from napari_invert.identify.paired import paired_difference_interval

    assert mean_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)  # every resample has the same mean
    # two values 0 and 1: resampled means are 0, 1/2, 1 with P = 1/4, 1/2, 1/4
    assert mean_interval([0.0, 1.0], n_boot=4000, seed=2) == (0.0, 1.0)
    assert mean_interval([0.0, 1.0], n_boot=4000, seed=2, level=0.4) == (0.5, 0.5)
    rng = np.random.default_rng(4)
    x = rng.normal(2.0, 1.0, 3000)
    lo, hi = mean_interval(x, n_boot=2000, seed=0)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * se, rel=0.1)
    # the paired interval is the mean interval of the per-pair differences
    a, b = rng.normal(0.5, 1, 12), rng.normal(0, 1, 12)
    assert paired_difference_interval(a, b, seed=3).ci == mean_interval(a - b, seed=3)
    with pytest.raises(ValueError, match="NaN"):
        mean_interval([1.0, np.nan])


def test_auc_bootstrap_and_percentile_interval() -> None:
    boots = auc_bootstrap([5, 6, 7], [1, 2], n_boot=300, seed=0)
    assert boots.shape == (300,) and np.all(boots == 1.0)  # separated groups stay separated
    boots = auc_bootstrap([0.9, 0.2, 0.6], [0.5, 0.1], n_boot=1000, seed=4)
    assert np.all((boots >= 0) & (boots <= 1))
    assert auc_interval([0.9, 0.2, 0.6], [0.5, 0.1], n_boot=1000, seed=4) == percentile_interval(boots)
    assert percentile_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))


def test_clopper_pearson_and_binomial_known_answers() -> None:
    # k = 0: upper bound solves (1 - p)^n = 0.025; k = n: lower bound solves p^n = 0.025
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(1 - hi) and lo == pytest.approx(0.187086, abs=1e-5)
    assert binomial_sf(1, 4, 0.5) == pytest.approx(1 - 0.5**4)
    assert binomial_sf(4, 4, 0.5) == pytest.approx(1 / 16)
    assert binomial_sf(0, 4, 0.5) == 1.0 and binomial_sf(3, 0, 0.5) == 1.0
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
