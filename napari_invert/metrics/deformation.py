"""Deformation magnitude (compatibility module): see :mod:`napari_invert.metrics.registration`.

The implementation is split by concern under :mod:`napari_invert.metrics.registration`
(``common``, ``ants``, ``fireants``, ``matrix``); this module keeps the public names
importable from their old place. It re-exports that package's ``__all__`` rather than a
copy of the list, so the two cannot drift apart.
"""

from __future__ import annotations

from napari_invert.metrics import registration as _registration
from napari_invert.metrics.registration import *  # noqa: F403

__all__ = list(_registration.__all__)
