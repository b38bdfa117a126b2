"""Similarity-matrix benchmarks: windowed SSIM and masked Pearson correlation.

SSIM (unmasked: every implementation averages the interior, 5 voxels cropped per face)
--------------------------------------------------------------------------------------
* **ours**: :func:`napari_invert.metrics.ssim.ssim_windowed` (per pair, float64) and
  :func:`~napari_invert.metrics.ssim.ssim_matrix` (float32; per pair as a 1 x 1 matrix,
  and the ``N x M`` matrices);
* **skimage**: ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=L)`` called in a loop;
* **MONAI**: ``monai.metrics.SSIMMetric(spatial_dims=3, data_range=L,
  kernel_type="gaussian", win_size=11, kernel_sigma=1.5)`` called in a loop (one pair per
  call, on the benchmark device). MONAI 1.6 names the window ``win_size`` (not
  ``kernel_size``); it convolves with the full 11^3 kernel without padding, which gives
  exactly the interior that skimage averages.

The looped references are timed on a few pairs and **extrapolated** to the matrix size.

Correlation (inside the candidate original's brain mask)
--------------------------------------------------------
* **ours**: :func:`~napari_invert.metrics.correlation.pearson_correlation` (per pair) and
  :func:`~napari_invert.metrics.correlation.correlation_matrix`;
* **NumPy**: ``np.corrcoef(a[mask], b[mask])[0, 1]`` per pair (extrapolated likewise).

Every case records the largest absolute difference between ours and each reference on
the timed pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_invert.bench.cases.volumes import VolumeSet
from napari_invert.bench.timing import Stats, extrapolate, speedup, thread_limit, time_calls

__all__ = ["bench_correlation", "bench_ssim", "reference_pairs"]

Log = Callable[[str], None]


def _nolog(message: str) -> None:
    pass


def reference_pairs(n_rows: int, n_cols: int, count: int) -> list[tuple[int, int]]:
    """``count`` distinct-looking ``(row, column)`` pairs inside an ``n_rows x n_cols`` matrix
    (row ``r % n_rows``, column ``(3 r + 1) % n_cols``; the true pair is not favoured)."""
    return [(r % n_rows, (3 * r + 1) % n_cols) for r in range(count)]


def _max_abs(a: Sequence[float], b: Sequence[float]) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(x - y))) if x.size else float("nan")


def _matrix_runs(
    call: Callable[[], np.ndarray],
    warm: Callable[[], Any],
    repeats: int,
    budget_s: float,
    device: Any,
) -> tuple[Stats, np.ndarray]:
    """Time ``call`` up to ``repeats`` times after one warm-up; stop early when the next run
    would exceed ``budget_s`` in total (at least one run)."""
    stats, results = time_calls([call], [warm], device)
    while len(stats.runs_s) < repeats and sum(stats.runs_s) + stats.runs_s[-1] <= budget_s:
        more, _ = time_calls([call], (), device)
        stats.runs_s.extend(more.runs_s)
    if len(stats.runs_s) < repeats:
        stats.note = (
            f"{len(stats.runs_s)} run(s) instead of {repeats}: one run takes "
            f"{stats.runs_s[0]:.0f} s (time budget {budget_s:.0f} s per case)"
        )
    return stats, results[0]


def bench_ssim(
    vs: VolumeSet,
    matrix_sizes: Sequence[tuple[int, int]],
    device: Any,
    repeats: int,
    ref_pairs: int,
    budget_s: float,
    log: Log = _nolog,
    threads: int | None = None,
) -> dict[str, Any]:
    """Windowed SSIM: per pair and ``N x M`` matrices, ours vs skimage and MONAI.

    Parameters
    ----------
    vs
        Volumes (``recons[:N]`` are the rows, ``originals[:M]`` the columns).
    matrix_sizes
        ``(N, M)`` matrices to time (each ``<= len(vs.originals)``).
    device
        Torch device of ours and of MONAI (skimage always runs on the CPU).
    repeats
        Timed runs per figure (matrices: fewer when over ``budget_s``).
    ref_pairs
        Pairs timed per per-pair figure (one more is the warm-up).
    budget_s
        Time budget per matrix figure of ours.
    threads
        Run the whole case with this many torch threads and (``threadpoolctl``) BLAS
        threads (``None``: as configured). skimage's filters are single-threaded, so
        ``threads=1`` is the thread-for-thread comparison.

    Returns
    -------
    dict
        ``shape``, ``source``, ``data_range``, ``pair`` (stats per implementation and
        speed-ups), ``matrices`` (per size: ours measured, references extrapolated,
        speed-ups) and ``agreement`` (max abs differences).
    """
    with thread_limit(threads) as limits:
        out = _ssim_case(vs, matrix_sizes, device, repeats, ref_pairs, budget_s, log)
    out["threads"] = limits
    return out


def _ssim_case(
    vs: VolumeSet,
    matrix_sizes: Sequence[tuple[int, int]],
    device: Any,
    repeats: int,
    ref_pairs: int,
    budget_s: float,
    log: Log,
) -> dict[str, Any]:
    import torch
    from monai.metrics import SSIMMetric
    from skimage.metrics import structural_similarity

    from napari_invert.metrics.ssim import ssim_matrix, ssim_windowed

    dev = torch.device(device)
    L = float(vs.data_range)
    n_rows = min(n for n, _ in matrix_sizes)
    n_cols = min(m for _, m in matrix_sizes)
    pairs = reference_pairs(n_rows, n_cols, ref_pairs + 1)
    warm_pair, timed = pairs[0], pairs[1:]
    R, Orig = vs.recons, vs.originals
    monai = SSIMMetric(spatial_dims=3, data_range=L, kernel_type="gaussian", win_size=11, kernel_sigma=1.5)

    def t(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(v))[None, None].to(dev)

    impls: dict[str, Callable[[int, int], float]] = {
        "skimage": lambda i, j: float(
            structural_similarity(
                R[i], Orig[j], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L
            )
        ),
        "monai": lambda i, j: float(monai(t(R[i]), t(Orig[j])).reshape(-1)[0]),
        "ours_windowed": lambda i, j: float(ssim_windowed(R[i], Orig[j], L, device=dev)),  # type: ignore[arg-type]
        "ours_matrix_1x1": lambda i, j: float(ssim_matrix(R[i][None], Orig[j][None], L, device=dev)[0, 0]),
    }
    pair_stats: dict[str, Stats] = {}
    values: dict[str, list[float]] = {}
    for name, fn in impls.items():
        log(f"SSIM {vs.shape} [{torch.get_num_threads()} thr] per pair: {name}")
        stats, vals = time_calls(
            [lambda i=i, j=j, fn=fn: fn(i, j) for i, j in timed],
            [lambda fn=fn: fn(*warm_pair)],
            dev,
        )
        pair_stats[name], values[name] = stats, vals
    pair = {
        "pairs": [list(p) for p in timed],
        **{name: s.to_dict() for name, s in pair_stats.items()},
        "speedup_windowed_vs_skimage": speedup(pair_stats["skimage"], pair_stats["ours_windowed"]),
        "speedup_windowed_vs_monai": speedup(pair_stats["monai"], pair_stats["ours_windowed"]),
        "speedup_matrix_1x1_vs_skimage": speedup(pair_stats["skimage"], pair_stats["ours_matrix_1x1"]),
        "speedup_matrix_1x1_vs_monai": speedup(pair_stats["monai"], pair_stats["ours_matrix_1x1"]),
    }

    matrices = []
    matrix_values: list[float] = []
    for n, m in matrix_sizes:
        log(f"SSIM {vs.shape} [{torch.get_num_threads()} thr] matrix {n}x{m}: ours")
        stats, mat = _matrix_runs(
            lambda n=n, m=m: ssim_matrix(R[:n], Orig[:m], L, device=dev),
            lambda: ssim_matrix(R[:1], Orig[:2], L, device=dev),
            repeats,
            budget_s,
            dev,
        )
        if not matrix_values:
            matrix_values = [float(mat[i, j]) for i, j in timed]
        ref_sk = extrapolate(pair_stats["skimage"], n * m)
        ref_mo = extrapolate(pair_stats["monai"], n * m)
        entry: dict[str, Any] = {
            "n": n,
            "m": m,
            "pairs": n * m,
            "ours": stats.to_dict(),
            "ours_threads": torch.get_num_threads(),
            "ours_per_pair_s": stats.median_s / (n * m),
            "skimage_loop": ref_sk.to_dict(),
            "monai_loop": ref_mo.to_dict(),
            "speedup_vs_skimage": speedup(ref_sk, stats),
            "speedup_vs_monai": speedup(ref_mo, stats),
        }
        matrices.append(entry)
    sk = values["skimage"]
    agreement = {
        "pairs_checked": len(timed),
        "ours_windowed_vs_skimage": _max_abs(values["ours_windowed"], sk),
        "ours_matrix_vs_skimage": _max_abs(matrix_values, sk),
        "ours_matrix_1x1_vs_skimage": _max_abs(values["ours_matrix_1x1"], sk),
        "monai_vs_skimage": _max_abs(values["monai"], sk),
        "ours_windowed_vs_monai": _max_abs(values["ours_windowed"], values["monai"]),
        "values_skimage": sk,
    }
    return {
        "metric": "ssim_windowed",
        "shape": list(vs.shape),
        "source": vs.source,
        "source_note": vs.note,
        "data_range": L,
        "masked": False,
        "device": str(dev),
        "pair": pair,
        "matrices": matrices,
        "agreement": agreement,
    }


def bench_correlation(
    vs: VolumeSet,
    matrix_sizes: Sequence[tuple[int, int]],
    device: Any,
    repeats: int,
    ref_pairs: int,
    budget_s: float,
    log: Log = _nolog,
    threads: int | None = None,
) -> dict[str, Any]:
    """Masked Pearson correlation: per pair and ``N x M`` matrices, ours vs a NumPy loop.

    Same parameters and layout as :func:`bench_ssim`; the mask of pair ``(i, j)`` is the
    brain mask of original ``j``.
    """
    with thread_limit(threads) as limits:
        out = _correlation_case(vs, matrix_sizes, device, repeats, ref_pairs, budget_s, log)
    out["threads"] = limits
    return out


def _correlation_case(
    vs: VolumeSet,
    matrix_sizes: Sequence[tuple[int, int]],
    device: Any,
    repeats: int,
    ref_pairs: int,
    budget_s: float,
    log: Log,
) -> dict[str, Any]:
    import torch

    from napari_invert.metrics.correlation import correlation_matrix, pearson_correlation

    dev = torch.device(device)
    n_rows = min(n for n, _ in matrix_sizes)
    n_cols = min(m for _, m in matrix_sizes)
    pairs = reference_pairs(n_rows, n_cols, ref_pairs + 1)
    warm_pair, timed = pairs[0], pairs[1:]
    R, Orig, K = vs.recons, vs.originals, vs.masks

    impls: dict[str, Callable[[int, int], float]] = {
        "numpy": lambda i, j: float(np.corrcoef(R[i][K[j]], Orig[j][K[j]])[0, 1]),
        "ours_pair": lambda i, j: pearson_correlation(R[i], Orig[j], K[j]),
    }
    pair_stats: dict[str, Stats] = {}
    values: dict[str, list[float]] = {}
    for name, fn in impls.items():
        log(f"correlation {vs.shape} [{torch.get_num_threads()} thr] per pair: {name}")
        stats, vals = time_calls(
            [lambda i=i, j=j, fn=fn: fn(i, j) for i, j in timed],
            [lambda fn=fn: fn(*warm_pair)],
            dev,
        )
        pair_stats[name], values[name] = stats, vals
    matrices = []
    matrix_values: list[float] = []
    for n, m in matrix_sizes:
        log(f"correlation {vs.shape} [{torch.get_num_threads()} thr] matrix {n}x{m}: ours")
        stats, mat = _matrix_runs(
            lambda n=n, m=m: correlation_matrix(R[:n], Orig[:m], K[:m], device=dev),
            lambda: correlation_matrix(R[:1], Orig[:2], K[:2], device=dev),
            repeats,
            budget_s,
            dev,
        )
        if not matrix_values:
            matrix_values = [float(mat[i, j]) for i, j in timed]
        ref = extrapolate(pair_stats["numpy"], n * m)
        entry: dict[str, Any] = {
            "n": n,
            "m": m,
            "pairs": n * m,
            "ours": stats.to_dict(),
            "ours_threads": torch.get_num_threads(),
            "ours_per_pair_s": stats.median_s / (n * m),
            "numpy_loop": ref.to_dict(),
            "speedup_vs_numpy": speedup(ref, stats),
        }
        matrices.append(entry)
    return {
        "metric": "correlation",
        "shape": list(vs.shape),
        "source": vs.source,
        "source_note": vs.note,
        "masked": True,
        "device": str(dev),
        "pair": {
            "pairs": [list(p) for p in timed],
            **{name: s.to_dict() for name, s in pair_stats.items()},
            "speedup_pair_vs_numpy": speedup(pair_stats["numpy"], pair_stats["ours_pair"]),
        },
        "matrices": matrices,
        "agreement": {
            "pairs_checked": len(timed),
            "ours_pair_vs_numpy": _max_abs(values["ours_pair"], values["numpy"]),
            "ours_matrix_vs_numpy": _max_abs(matrix_values, values["numpy"]),
            "values_numpy": values["numpy"],
        },
    }
