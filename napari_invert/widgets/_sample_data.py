"""npe2 sample data: the synthetic demo cohort and, when present, one LPBA40 subject.

Sample functions are called by napari in the main thread and must return layer data;
problems are shown in the viewer and an empty list is returned instead of raising.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error

from napari_invert.config import default_data_root
from napari_invert.errors import NapariInvertError
from napari_invert.widgets._core_api import core_function, load_volume
from napari_invert.widgets._layers import LayerData, display_range

#: Subjects written for the "Demo cohort" sample (enough to browse; fast to make).
DEMO_SAMPLE_SUBJECTS = 4


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/napari-invert`` (``~/.cache/napari-invert``), or a temp folder."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "napari-invert"
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError:
        base = Path(tempfile.gettempdir()) / "napari-invert-cache"
        base.mkdir(parents=True, exist_ok=True)
    return base


def demo_cohort_folder(n_subjects: int = DEMO_SAMPLE_SUBJECTS) -> Path:
    """The demo cohort in the cache (written once with ``make_demo_cohort``)."""
    target = cache_root() / f"demo_cohort_{n_subjects}"
    if any((target / "images").glob("*.nii.gz")):
        return target
    make_demo_cohort = core_function("napari_invert.data.demo", "make_demo_cohort")
    tmp = Path(tempfile.mkdtemp(prefix=".demo_cohort.", dir=target.parent))
    try:
        make_demo_cohort(tmp, n_subjects=n_subjects)
        if target.exists():  # a concurrent call finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _subject_layers(image_path: Path, label_path: Path | None, subject: str, source: str) -> list[LayerData]:
    image, affine = load_volume(image_path, kind="image")
    spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    layers: list[LayerData] = [
        (
            image,
            {
                "name": f"{subject} image",
                "scale": spacing,
                "contrast_limits": display_range(image),
                "metadata": {"source": source, "path": str(image_path)},
            },
            "image",
        )
    ]
    if label_path is not None and label_path.is_file():
        labels, _ = load_volume(label_path, kind="label")
        layers.append(
            (
                labels.astype(np.int32),
                {
                    "name": f"{subject} labels",
                    "scale": spacing,
                    "opacity": 0.4,
                    "metadata": {"source": source, "path": str(label_path)},
                },
                "labels",
            )
        )
    return layers


def demo_cohort_sample() -> list[Any]:
    """First subject (image + labels) of the synthetic demo cohort."""
    try:
        folder = demo_cohort_folder()
        image_path = sorted((folder / "images").glob("*.nii.gz"))[0]
        subject = image_path.name[: -len(".nii.gz")]
        return _subject_layers(image_path, folder / "labels" / image_path.name, subject, "demo cohort")
    except (NapariInvertError, OSError, IndexError, ValueError) as exc:
        show_error(f"napari-invert: cannot make the demo cohort: {exc}")
        return []


def lpba40_sample() -> list[Any]:
    """LPBA40 subject S01 (skull-stripped T1 + 56-structure labels) from the shared data."""
    root = default_data_root() / "lpba40"
    image_path = root / "images" / "S01.nii.gz"
    if not image_path.is_file():
        show_error(
            f"napari-invert: LPBA40 not found at {root} (set NAPARI_INVERT_DATA to the shared data folder)"
        )
        return []
    try:
        return _subject_layers(image_path, root / "labels" / "S01.nii.gz", "S01", "LPBA40")
    except (NapariInvertError, OSError, ValueError) as exc:
        show_error(f"napari-invert: cannot read LPBA40 S01: {exc}")
        return []
