"""Registration benchmark: seconds per ANTs pair per preset, and projected matrix costs.

One pair of prepared LPBA40 subjects on the quick_cpu grid (two different subjects: the
off-diagonal pairs that make up almost all of a deformation matrix) is registered with
:func:`napari_invert.metrics.deformation.register_pair` for each preset. It runs in a
spawned process with ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1`` — exactly how
:func:`~napari_invert.metrics.deformation.deformation_matrix` runs its ``workers`` — after
one untimed ``fast`` warm-up registration.

The projection (:func:`project_deformation`) multiplies the median seconds per pair by
the number of registrations ``napari-invert evaluate`` performs for a configuration and
divides by its ``workers``:

* per experiment (one variant x architecture x tap), ``R`` reconstructed subjects (every
  subject is private in one fold) against ``N`` candidate originals: ``full`` registers
  ``R x N`` pairs, ``sample`` ``R x (1 + sample_size)``; plus ``R`` prior-baseline pairs;
* per study: ``E`` registered experiments (``evaluation.deformation.taps``: ``first`` =
  the first tap of each architecture, ``all`` = every tap), the prior pairs being shared
  by all experiments of a variant (content-keyed cache), so ``E x R x cols + V x R``.

It assumes the workers scale perfectly (one core each, nothing else running), which a
shared machine does not give: treat it as a lower bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_invert.bench.timing import Stats, run_isolated
from napari_invert.config import StudyConfig

__all__ = ["bench_registration", "project_deformation", "registration_case"]

Log = Callable[[str], None]

#: Environment of the registration child: single-threaded ITK, as deformation_matrix's workers.
SINGLE_THREAD_ENV = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1"}


def registration_case(
    fixed: np.ndarray,
    moving: np.ndarray,
    mask: np.ndarray | None,
    spacing: tuple[float, float, float],
    presets: list[str],
    repeats: dict[str, int],
    warmup: int,
    seed: int = 0,
    isolated: bool = False,
) -> dict[str, Any]:
    """Time ``register_pair(fixed, moving, ...)`` ``repeats[preset]`` times per preset.

    ``warmup`` untimed ``fast`` registrations come first. Returns, per preset,
    ``seconds_per_pair`` (stats) and the ``mean_norm_mm`` of each run, plus
    ``itk_threads`` (the environment value, ``None`` = ITK's default: all cores).
    """
    from napari_invert.metrics.deformation import register_pair

    def once(preset: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        res = register_pair(fixed, moving, spacing, preset, mask, seed, keep_displacement=False)
        return time.perf_counter() - t0, res.mean_norm

    for _ in range(max(warmup, 0)):
        once("fast")
    out: dict[str, Any] = {"itk_threads": os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}
    for preset in presets:
        runs = [once(preset) for _ in range(max(repeats.get(preset, 1), 1))]
        out[preset] = {
            "seconds_per_pair": Stats([r[0] for r in runs], warmup=warmup).to_dict(),
            "mean_norm_mm": [r[1] for r in runs],
        }
    return out


def project_deformation(
    seconds_per_pair: dict[str, float],
    config: StudyConfig,
    n_subjects: int,
) -> dict[str, Any]:
    """Projected wall time of ``evaluate``'s deformation step for ``config`` (see module).

    ``seconds_per_pair``: median seconds of one single-threaded registration per preset.
    Returns the counts (experiments, pairs per experiment and per study for ``full`` and
    ``sample``), ``workers`` and, per preset and mode, the projected seconds.
    """
    variants = len(config.preprocess.variants)
    dcfg = config.evaluation.deformation
    registered_taps = getattr(dcfg, "taps", "all")  # "first": one tap per architecture
    archs = [a for a in config.segmenter.architectures if config.attack.taps.get(a)]
    n_taps = sum(len(config.attack.taps[a]) for a in archs)
    per_variant = len(archs) if registered_taps == "first" else n_taps
    experiments = variants * per_variant
    rows = n_subjects
    cand = n_subjects
    k = dcfg.sample_size
    workers = max(dcfg.workers, 1)
    cols = {"full": cand, "sample": min(cand, 1 + k)}
    pairs_exp = {mode: rows * c + rows for mode, c in cols.items()}
    pairs_study = {mode: experiments * rows * c + variants * rows for mode, c in cols.items()}
    projected: dict[str, Any] = {}
    for preset, s in seconds_per_pair.items():
        projected[preset] = {
            mode: {
                "per_experiment_s": pairs_exp[mode] * s / workers,
                "per_study_s": pairs_study[mode] * s / workers,
            }
            for mode in cols
        }
    return {
        "config": config.name,
        "n_subjects": n_subjects,
        "experiments": experiments,
        "registered_taps": registered_taps,
        "matrix": [rows, cand],
        "sample_size": k,
        "workers": workers,
        "configured_preset": config.evaluation.deformation.preset,
        "configured_mode": config.evaluation.deformation.mode,
        "pairs_per_experiment": pairs_exp,
        "pairs_per_study": pairs_study,
        "projected": projected,
        "assumption": "perfect scaling over `workers` single-threaded processes on an idle machine",
    }


def bench_registration(
    fixed: np.ndarray,
    moving: np.ndarray,
    mask: np.ndarray | None,
    spacing: float,
    source: str,
    presets: list[str],
    repeats: dict[str, int],
    warmup: int,
    isolate: bool,
    config: StudyConfig,
    n_subjects: int,
    log: Log,
) -> dict[str, Any]:
    """Time each preset on one pair and project the matrix costs for ``config``."""
    log(f"registration: presets {presets} on {fixed.shape} at {spacing} mm")
    result = run_isolated(
        registration_case,
        {
            "fixed": np.ascontiguousarray(fixed, dtype=np.float32),
            "moving": np.ascontiguousarray(moving, dtype=np.float32),
            "mask": None if mask is None else np.asarray(mask, dtype=bool),
            "spacing": (float(spacing),) * 3,
            "presets": presets,
            "repeats": repeats,
            "warmup": warmup,
        },
        isolate,
        torch_threads=False,
        env=SINGLE_THREAD_ENV,
    )
    medians = {p: float(result[p]["seconds_per_pair"]["median_s"]) for p in presets}
    return {
        "shape": list(fixed.shape),
        "voxel_mm": float(spacing),
        "source": source,
        "isolated": isolate,
        "itk_threads": result.get("itk_threads"),
        "presets": {p: result[p] for p in presets},
        "projection": project_deformation(medians, config, n_subjects),
    }
