"""npe2 reader: drop a study folder on napari to see the first subject's results.

A study folder is a directory with ``config.yaml``, ``splits.json`` and ``cohort.json``
(:meth:`StudyFolder.is_study`). The reader returns, for the first subject of the cohort
and the first variant, the original and one reconstruction per experiment (each from
the subject's private fold), all on the model grid with the study's voxel size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_warning

from napari_invert.errors import NapariInvertError
from napari_invert.study.layout import StudyFolder
from napari_invert.study.results import StudyResults
from napari_invert.widgets._layers import LayerData, display_range, original_layer, recon_layer

#: napari's sentinel for "read fine, nothing to add" (avoids a second reader being tried).
_NOTHING: list[Any] = [(None,)]


def _single_path(path: str | list[str] | Any) -> Path | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return Path(str(path))
    except (TypeError, ValueError):
        return None


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[Any]] | None:
    """Return :func:`read_study` when ``path`` is a study folder, else ``None``."""
    p = _single_path(path)
    if p is None or not p.is_dir() or not StudyFolder(p).is_study():
        return None
    return read_study


def study_layers(
    results: StudyResults, subject: str | None = None, variant: str | None = None
) -> list[LayerData]:
    """Original + reconstructions of ``subject`` (default: the first) as layer data."""
    subject = subject or results.subject_ids[0]
    variant = variant or results.variants[0]
    spacing = results.spacing
    original = results.original(variant, subject)
    contrast = display_range(original)
    layers: list[LayerData] = []
    for slot, experiment in enumerate(e for e in results.experiments() if e.variant == variant):
        if results.has_recon(experiment, subject):
            recon = results.recon(experiment, subject)
            layers.append(recon_layer(recon, experiment, subject, spacing, contrast, slot))
    layers.append(original_layer(original, subject, spacing, contrast))
    return layers


def read_study(path: str | list[str]) -> list[Any]:
    """Reader function: never raises; a broken study is reported in the viewer."""
    p = _single_path(path)
    try:
        results = StudyResults(p) if p is not None else None
        if results is None:
            return _NOTHING
        layers = study_layers(results)
    except (NapariInvertError, KeyError, IndexError, TypeError, ValueError) as exc:
        show_error(f"napari-invert: cannot open study {p}: {exc}")
        return _NOTHING
    if len(layers) == 1:
        show_warning(f"napari-invert: {p} has no reconstructions yet; showing the original only")
    return layers
