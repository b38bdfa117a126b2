"""npe2 reader: study folders and NIfTI files (``*.nii``, ``*.nii.gz``), nothing else.

* A study folder (``config.yaml`` + ``splits.json`` + ``cohort.json``,
  :meth:`StudyFolder.is_study`) dropped on a viewer opens with the Study and Compare docks,
  as ``napari-invert view`` does; without a viewer (a script calling the reader) the
  first subject's original and reconstructions are returned as layer data.
* A NIfTI file opens as one layer on its voxel grid with its voxel size (mm) as ``scale``;
  an integer-valued file with few values opens as a labels layer.

The manifest claims only these patterns, so napari does not offer this reader for other
files; a folder that is not a study is declined (``None``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_warning

from napari_invert.errors import NapariInvertError
from napari_invert.study.layout import StudyFolder
from napari_invert.study.results import StudyResults
from napari_invert.widgets._layers import LayerData, display_range, original_layer, recon_layer

#: napari's sentinel for "read fine, nothing to add" (avoids a second reader being tried).
_NOTHING: list[Any] = [(None,)]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: An integer NIfTI with at most this many distinct values opens as labels.
MAX_LABELS = 512


def _single_path(path: str | list[str] | Any) -> Path | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        return Path(str(path))
    except (TypeError, ValueError):
        return None


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[Any]] | None:
    """:func:`read_study` for a study folder, :func:`read_nifti` for NIfTI files, else ``None``."""
    if isinstance(path, (list, tuple)) and len(path) > 1:
        paths = [Path(str(p)) for p in path]
        return read_nifti if all(is_nifti(p) and p.is_file() for p in paths) else None
    p = _single_path(path)
    if p is None:
        return None
    if p.is_dir():
        return read_study if StudyFolder(p).is_study() else None
    return read_nifti if is_nifti(p) and p.is_file() else None


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


def _current_viewer() -> Any:
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # no Qt application / no window
        return None


def read_study(path: str | list[str]) -> list[Any]:
    """Reader function: never raises; a broken study is reported in the viewer (once)."""
    p = _single_path(path)
    viewer = _current_viewer()
    if viewer is not None and p is not None:
        from napari_invert.widgets._launch import open_study_in_viewer

        try:
            open_study_in_viewer(viewer, p)
        except Exception as exc:  # docking failed: say so, never raise into napari
            show_error(f"napari-invert: cannot open study {p}: {exc}")
        return _NOTHING
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


def nifti_layer(path: Path) -> LayerData:
    """One NIfTI file as layer data (image, or labels for an integer file with few values)."""
    from napari_invert.data.nifti import load_nifti

    volume = load_nifti(path, kind="image")
    data, affine = volume.array, volume.affine
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    meta = {"path": str(path), "affine": np.asarray(affine).tolist()}
    integral = bool(np.all(np.mod(data, 1) == 0)) and data.min() >= 0
    if integral and len(np.unique(data)) <= MAX_LABELS and data.max() > 1:
        return (data.astype(np.int32), {"name": name, "scale": spacing, "metadata": meta}, "labels")
    kwargs = {"name": name, "scale": spacing, "contrast_limits": display_range(data), "metadata": meta}
    return (data, kwargs, "image")


def read_nifti(path: str | list[str]) -> list[Any]:
    """Reader function for ``.nii`` / ``.nii.gz`` files: never raises."""
    paths = [Path(str(p)) for p in (path if isinstance(path, (list, tuple)) else [path])]
    layers: list[Any] = []
    for p in paths:
        try:
            layers.append(nifti_layer(p))
        except (NapariInvertError, OSError, ValueError) as exc:
            show_error(f"napari-invert: cannot open {p.name}: {exc}")
    return layers or _NOTHING
