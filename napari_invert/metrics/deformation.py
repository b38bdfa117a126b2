"""Deformation magnitude (compatibility module): see :mod:`napari_invert.metrics.registration`.

The implementation is split by concern under :mod:`napari_invert.metrics.registration`
(``common``, ``ants``, ``fireants``, ``matrix``); this module keeps the public names
importable from their old place.
"""

from __future__ import annotations

from napari_invert.metrics.registration import (
    CACHE_VERSION,
    PRESETS,
    DeformationResult,
    RegistrationPreset,
    candidate_pairs,
    deformation_matrix,
    magnitude_cache_path,
    pairs_to_matrix,
    register_pair,
)

__all__ = [
    "CACHE_VERSION",
    "PRESETS",
    "DeformationResult",
    "RegistrationPreset",
    "candidate_pairs",
    "deformation_matrix",
    "magnitude_cache_path",
    "pairs_to_matrix",
    "register_pair",
]
