"""Deformation magnitude: registration of a reconstruction to an original, two backends.

The paper's third metric (section 4.2.2): each reconstruction (*moving*) is registered to
its original and to every other original (*fixed*) — first affinely, then non-linearly
with the cross-correlation metric — and the mean norm of the non-linear displacement is
the (dis)similarity: the true original should need the smallest deformation. Lower is
better (use ``higher_is_better=False`` when ranking).

* :mod:`~napari_invert.metrics.registration.common` — :class:`DeformationResult`, input
  checks, the metric from a displacement field, the content-keyed cache, pair bookkeeping;
* :mod:`~napari_invert.metrics.registration.ants` — ANTs (antspyx): MI affine, SyN CC;
  presets ``fast`` / ``paper``;
* :mod:`~napari_invert.metrics.registration.fireants` — FireANTs (PyTorch; CUDA when
  present): CC affine, greedy CC; the same preset names;
* :mod:`~napari_invert.metrics.registration.matrix` — :func:`register_pair` and
  :func:`deformation_matrix` with ``backend="ants" | "fireants"`` (worker processes, or
  blocks of pairs as units on an executor such as Ray).

``mean_norm`` is the mean Euclidean norm, in mm, of the **non-linear displacement field
only**; the affine stage (global position, size, shear) is returned separately
(:attr:`DeformationResult.affine`, :attr:`DeformationResult.total_mean_norm`).
"""

from __future__ import annotations

from napari_invert.metrics.registration.ants import PRESETS, RegistrationPreset
from napari_invert.metrics.registration.common import (
    BACKENDS,
    CACHE_VERSION,
    DeformationResult,
    candidate_pairs,
    pairs_to_matrix,
)
from napari_invert.metrics.registration.matrix import (
    deformation_matrix,
    magnitude_cache_path,
    register_pair,
    registration_block_unit,
)

__all__ = [
    "BACKENDS",
    "CACHE_VERSION",
    "PRESETS",
    "DeformationResult",
    "RegistrationPreset",
    "candidate_pairs",
    "deformation_matrix",
    "magnitude_cache_path",
    "pairs_to_matrix",
    "register_pair",
    "registration_block_unit",
]
