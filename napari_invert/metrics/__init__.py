"""Reconstruction-quality and similarity metrics.

* :mod:`~napari_invert.metrics.correlation` — Pearson correlation of grey levels (the
  paper's "MCC"): :func:`pearson_correlation`, :func:`correlation_matrix`.
* :mod:`~napari_invert.metrics.ssim` — windowed Gaussian SSIM (Wang et al., equal to
  scikit-image's): :func:`ssim_windowed`, :func:`ssim_map`, :func:`ssim_matrix`; its torch
  engine :class:`WindowedSSIM` in :mod:`~napari_invert.metrics.ssim_torch`; and the paper's
  global masked SSIM in :mod:`~napari_invert.metrics.global_ssim`: :func:`ssim_global`,
  :func:`ssim_global_matrix`.
* :mod:`~napari_invert.metrics.deformation` — ANTs affine + SyN registration and the mean
  displacement norm (mm): :func:`register_pair`, :func:`deformation_matrix`.
* :mod:`~napari_invert.metrics.dice` — :func:`dice_per_class`, :func:`mean_dice`; the
  trivial baseline :func:`majority_label_map`, :func:`majority_baseline_dice`.

Submodules are imported lazily (``torch`` and ``ants`` load only when used), so worker
processes that only register images do not pay for torch and vice versa.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_invert.metrics.correlation import correlation_matrix, pearson_correlation
    from napari_invert.metrics.deformation import (
        PRESETS,
        DeformationResult,
        RegistrationPreset,
        candidate_pairs,
        deformation_matrix,
        magnitude_cache_path,
        pairs_to_matrix,
        register_pair,
    )
    from napari_invert.metrics.dice import (
        dice_per_class,
        majority_baseline_dice,
        majority_label_map,
        mean_dice,
    )
    from napari_invert.metrics.global_ssim import ssim_global, ssim_global_matrix
    from napari_invert.metrics.ssim import common_data_range, ssim_map, ssim_matrix, ssim_windowed
    from napari_invert.metrics.ssim_torch import WindowedSSIM

_WHERE = {
    "pearson_correlation": "correlation",
    "correlation_matrix": "correlation",
    "WindowedSSIM": "ssim_torch",
    "common_data_range": "ssim",
    "ssim_map": "ssim",
    "ssim_windowed": "ssim",
    "ssim_matrix": "ssim",
    "ssim_global": "global_ssim",
    "ssim_global_matrix": "global_ssim",
    "PRESETS": "deformation",
    "DeformationResult": "deformation",
    "RegistrationPreset": "deformation",
    "register_pair": "deformation",
    "deformation_matrix": "deformation",
    "candidate_pairs": "deformation",
    "magnitude_cache_path": "deformation",
    "pairs_to_matrix": "deformation",
    "dice_per_class": "dice",
    "mean_dice": "dice",
    "majority_label_map": "dice",
    "majority_baseline_dice": "dice",
}

__all__ = [
    "PRESETS",
    "DeformationResult",
    "RegistrationPreset",
    "WindowedSSIM",
    "candidate_pairs",
    "common_data_range",
    "correlation_matrix",
    "deformation_matrix",
    "dice_per_class",
    "magnitude_cache_path",
    "majority_baseline_dice",
    "majority_label_map",
    "mean_dice",
    "pairs_to_matrix",
    "pearson_correlation",
    "register_pair",
    "ssim_global",
    "ssim_global_matrix",
    "ssim_map",
    "ssim_matrix",
    "ssim_windowed",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_invert.metrics' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"napari_invert.metrics.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
