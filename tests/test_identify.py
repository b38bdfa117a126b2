"""Re-identification ranks and summaries on hand-built matrices (ties, NaN, direction)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_invert.identify import identification_summary, rank_true

SIM = np.array(
    [
        [0.9, 0.1, 0.2, 0.3],  # true 0 -> rank 1
        [0.5, 0.4, 0.5, 0.1],  # true 1 -> 0.5 and 0.5 beat it -> rank 3
        [0.7, 0.2, 0.7, 0.0],  # true 2, tied with column 0 -> pessimistic rank 2
        [0.3, 0.3, 0.3, 0.3],  # constant row -> worst rank 4
    ]
)
TRUE = np.array([0, 1, 2, 3])


def test_ranks_with_pessimistic_ties() -> None:
    np.testing.assert_array_equal(rank_true(SIM, TRUE), [1, 3, 2, 4])


def test_lower_is_better() -> None:
    dist = np.array([[1.0, 2.0, 3.0], [0.5, 0.7, 0.7], [2.0, 1.0, 3.0]])
    # row 0 true 0: smallest -> 1; row 1 true 1 (0.7): 0.5 and the tied 0.7 ahead -> 3;
    # row 2 true 2 (3.0): largest -> 3
    np.testing.assert_array_equal(rank_true(dist, np.array([0, 1, 2]), higher_is_better=False), [1, 3, 3])


def test_nan_candidates_are_skipped() -> None:
    sim = np.array([[0.2, np.nan, 0.9], [np.nan, 0.5, 0.4]])
    np.testing.assert_array_equal(rank_true(sim, np.array([0, 1])), [2, 1])
    with pytest.raises(ValueError, match="not finite"):
        rank_true(sim, np.array([1, 1]))


def test_summary_fields() -> None:
    res = identification_summary(SIM, TRUE, k=(1, 2, 5))
    assert res.n == 4 and res.n_candidates == 4
    assert res.top1 == pytest.approx(0.25) and res.top1_count == 1
    assert res.topk == {1: 0.25, 2: 0.5, 5: 1.0}
    assert res.top5 == 1.0
    assert res.mean_rank == pytest.approx((1 + 3 + 2 + 4) / 4)
    np.testing.assert_array_equal(res.rank_histogram, [1, 1, 1, 1])
    true = SIM[np.arange(4), TRUE]
    assert res.true_mean == pytest.approx(true.mean())
    assert res.true_sd == pytest.approx(true.std(ddof=1))
    off = SIM[~np.eye(4, dtype=bool)]
    assert res.other_mean == pytest.approx(off.mean())
    assert res.other_sd == pytest.approx(off.std(ddof=1))
    d = res.to_dict()
    json.dumps(d, allow_nan=False)  # JSON-ready
    assert d["ranks"] == [1, 3, 2, 4] and d["topk"]["2"] == 0.5


def test_perfect_identification_and_validation() -> None:
    rng = np.random.default_rng(0)
    sim = rng.random((6, 6)) + 2 * np.eye(6)
    res = identification_summary(sim, np.arange(6))
    assert res.top1 == 1.0 and res.mean_rank == 1.0 and res.rank_histogram[0] == 6
    with pytest.raises(ValueError, match="shape"):
        rank_true(sim, np.arange(5))
    with pytest.raises(ValueError, match="lie in"):
        rank_true(sim, np.array([0, 1, 2, 3, 4, 6]))
    with pytest.raises(ValueError, match="integer"):
        rank_true(sim, np.arange(6.0))
