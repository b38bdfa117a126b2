"""Re-identification: from a similarity matrix to the rank of the true original.

Rows are reconstructions (or the prior), columns candidate originals. For reconstruction
``i`` with true original ``t = true_index[i]``, the *rank* is the position of column ``t``
when row ``i`` is sorted from most to least similar (1 = correctly identified). The paper
(Table 3) reports these ranks for SSIM, MCC and the deformation magnitude; top-1 is the
number of reconstructions "matched" to their original.

Tie rule (pessimistic): every *other* candidate whose score is at least as good as the true
one — equal scores included — is counted ahead of it::

    rank_i = 1 + #{j != t : s_ij >= s_it}   (higher is better)
    rank_i = 1 + #{j != t : s_ij <= s_it}   (lower is better, e.g. deformation in mm)

so a constant row (e.g. an uninformative metric) gets the worst rank ``M``, never a lucky
rank 1.

Missing entries (``NaN``, e.g. candidate pairs not registered in the deformation "sample"
mode) are not candidates: they are skipped. The true entry itself must be finite.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["IdentificationResult", "identification_summary", "rank_true"]


def _validate(similarity: np.ndarray, true_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(similarity, dtype=np.float64)
    t = np.asarray(true_index)
    if s.ndim != 2:
        raise ValueError(f"similarity must be 2D (N, M), got shape {s.shape}")
    if t.ndim != 1 or t.shape[0] != s.shape[0]:
        raise ValueError(
            f"true_index must have shape ({s.shape[0]},) to match similarity {s.shape}, got {t.shape}"
        )
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError("true_index must hold integer column indices")
    if t.size and (t.min() < 0 or t.max() >= s.shape[1]):
        raise ValueError(f"true_index values must lie in [0, {s.shape[1] - 1}]")
    rows = np.arange(s.shape[0])
    if not np.all(np.isfinite(s[rows, t])):
        bad = rows[~np.isfinite(s[rows, t])]
        raise ValueError(f"the true entry is not finite for rows {bad.tolist()}")
    return s, t.astype(np.int64)


def rank_true(similarity: np.ndarray, true_index: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """1-based rank of the true original in each row (pessimistic ties).

    Parameters
    ----------
    similarity
        ``(N, M)`` scores of reconstruction ``i`` against candidate ``j``. ``NaN``
        entries are not candidates.
    true_index
        ``(N,)`` int, column of each row's true original.
    higher_is_better
        ``True`` for SSIM / correlation, ``False`` for distances (deformation mm).

    Returns
    -------
    np.ndarray
        ``(N,)`` int64 ranks in ``1 .. (number of finite candidates in the row)``.
    """
    s, t = _validate(similarity, true_index)
    rows = np.arange(s.shape[0])
    true_scores = s[rows, t][:, None]
    with np.errstate(invalid="ignore"):
        ahead = s >= true_scores if higher_is_better else s <= true_scores
    ahead &= np.isfinite(s)
    ahead[rows, t] = False
    return 1 + ahead.sum(axis=1).astype(np.int64)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


@dataclass
class IdentificationResult:
    """Summary of a re-identification experiment (one metric, one set of rows).

    Attributes
    ----------
    ranks
        ``(N,)`` int64 1-based rank of the true original per row (pessimistic ties).
    n
        Number of rows ``N``.
    n_candidates
        Number of columns ``M``.
    top1, top5
        Fraction of rows with rank <= 1 / <= 5, in ``[0, 1]`` (``n * top1`` = the paper's
        "matched" count).
    topk
        ``{k: fraction with rank <= k}`` for every requested ``k``.
    mean_rank
        Mean of ``ranks`` (1 is perfect; chance is ``(M + 1) / 2``).
    true_mean, true_sd
        Mean / sample SD (ddof=1) of the true-pair scores (paper Table 2 "with originals").
    other_mean, other_sd
        Mean / sample SD over all finite non-true entries, pooled (Table 2 "with others").
    rank_histogram
        ``(M,)`` int64: ``rank_histogram[r - 1]`` rows have rank ``r`` (paper Table 3).
    higher_is_better
        Direction the ranks were computed in.
    """

    ranks: np.ndarray
    n: int
    n_candidates: int
    top1: float
    top5: float
    topk: dict[int, float]
    mean_rank: float
    true_mean: float
    true_sd: float
    other_mean: float
    other_sd: float
    rank_histogram: np.ndarray
    higher_is_better: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def top1_count(self) -> int:
        """Number of rows whose true original ranked first."""
        return int(np.sum(self.ranks == 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists and floats; ``NaN`` becomes ``None``)."""
        return {
            "n": self.n,
            "n_candidates": self.n_candidates,
            "top1": _nan_to_none(self.top1),
            "top5": _nan_to_none(self.top5),
            "top1_count": self.top1_count,
            "topk": {str(k): _nan_to_none(v) for k, v in self.topk.items()},
            "mean_rank": _nan_to_none(self.mean_rank),
            "true_mean": _nan_to_none(self.true_mean),
            "true_sd": _nan_to_none(self.true_sd),
            "other_mean": _nan_to_none(self.other_mean),
            "other_sd": _nan_to_none(self.other_sd),
            "ranks": [int(r) for r in self.ranks],
            "rank_histogram": [int(c) for c in self.rank_histogram],
            "higher_is_better": self.higher_is_better,
            **self.extra,
        }


def _mean_sd(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    sd = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
    return float(np.mean(values)), sd


def identification_summary(
    similarity: np.ndarray,
    true_index: np.ndarray,
    higher_is_better: bool = True,
    k: Iterable[int] = (1, 5),
) -> IdentificationResult:
    """Ranks, top-k rates and true-vs-other score statistics for one similarity matrix.

    Parameters
    ----------
    similarity
        ``(N, M)`` scores (``NaN``: not a candidate).
    true_index
        ``(N,)`` int column of each row's true original.
    higher_is_better
        ``False`` for the deformation magnitude (mm).
    k
        Cut-offs for :attr:`IdentificationResult.topk` (1 and 5 are always included in
        ``top1`` / ``top5``).

    Returns
    -------
    IdentificationResult
    """
    s, t = _validate(similarity, true_index)
    ranks = rank_true(s, t, higher_is_better=higher_is_better)
    n, m = s.shape
    rows = np.arange(n)
    ks = sorted({int(x) for x in k} | {1, 5})
    if any(x < 1 for x in ks):
        raise ValueError("k values must be >= 1")
    frac = {x: float(np.mean(ranks <= x)) if n else float("nan") for x in ks}
    off = np.ones_like(s, dtype=bool)
    off[rows, t] = False
    true_mean, true_sd = _mean_sd(s[rows, t])
    other_mean, other_sd = _mean_sd(s[off])
    hist = np.bincount(ranks - 1, minlength=m).astype(np.int64)[:m] if n else np.zeros(m, int)
    return IdentificationResult(
        ranks=ranks,
        n=n,
        n_candidates=m,
        top1=frac[1],
        top5=frac[5],
        topk={x: frac[x] for x in sorted({int(x) for x in k})},
        mean_rank=float(np.mean(ranks)) if n else float("nan"),
        true_mean=true_mean,
        true_sd=true_sd,
        other_mean=other_mean,
        other_sd=other_sd,
        rank_histogram=hist,
        higher_is_better=higher_is_better,
    )
