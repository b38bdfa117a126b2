"""Layer descriptions (napari ``LayerDataTuple``) for originals, reconstructions, overlays.

Shared by the reader contribution and the Compare widget so both show the same names,
colormaps and contrast. Only display settings live here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_invert.study.results import Experiment
from napari_invert.threat_models import ARCH_NAMES, CONTROL_LABEL, ArchKey

LayerData = tuple[np.ndarray, dict[str, Any], str]

#: Metadata key that marks layers managed by napari-invert widgets.
META_KEY = "napari_invert"

OVERLAY_KINDS: tuple[str, ...] = ("ssim", "diff", "deformation")
OVERLAY_TITLES: dict[str, str] = {
    "ssim": "local SSIM",
    "diff": "|difference|",
    "deformation": "deformation (mm)",
}
_OVERLAY_STYLE: dict[str, dict[str, Any]] = {
    "ssim": {"colormap": "viridis", "opacity": 0.45, "blending": "translucent"},
    "diff": {"colormap": "inferno", "opacity": 0.8, "blending": "additive"},
    "deformation": {"colormap": "turbo", "opacity": 0.5, "blending": "translucent"},
}


def display_range(image: np.ndarray) -> tuple[float, float]:
    """Contrast limits shared by an original and its reconstructions (never empty)."""
    lo, hi = float(np.min(image)), float(np.max(image))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return (0.0, 1.0 if not np.isfinite(hi) or hi <= 0 else hi)
    return (lo, hi)


def image_layer(
    data: np.ndarray,
    name: str,
    spacing: tuple[float, float, float],
    contrast: tuple[float, float],
    meta: dict[str, Any],
) -> LayerData:
    """A grey-level image layer on the model grid (``scale`` = voxel size in mm)."""
    kwargs = {
        "name": name,
        "scale": tuple(float(s) for s in spacing),
        "colormap": "gray",
        "contrast_limits": contrast,
        "metadata": {META_KEY: meta},
    }
    return (data, kwargs, "image")


#: Short overlay names for layer names (the layer list shows about 26 characters).
OVERLAY_SHORT: dict[str, str] = {"ssim": "SSIM", "diff": "|diff|", "deformation": "deform."}
#: Longest layer name the widgets make (napari's layer list elides longer ones).
MAX_NAME = 26


def short_tap(tap: str) -> str:
    """``bottleneck+skips`` -> ``bn+skips`` (for names that must stay short)."""
    return tap.replace("bottleneck", "bn")


def experiment_title(experiment: Experiment, subject: str | None = None) -> str:
    """A reconstruction cell's title (and layer name): ``U-Net bottleneck+skips``.

    A plugin-trained decoder's cell says so (``U-Net bn+skips · plugin``); ``subject``
    (the reconstructed subject, when it differs from the grid's original) is prefixed.
    """
    key = ArchKey.parse(experiment.arch)
    name = key.arch if key.is_control else experiment.arch
    arch = ARCH_NAMES.get(name, name)
    if getattr(experiment, "study_experiment", None) is not None:
        title = f"{arch} {short_tap(experiment.tap)} · plugin"
    else:
        title = f"{arch} {experiment.tap}"
    if key.is_control:  # the untrained-victim control is named, never "unet@untrained"
        title += f" · {CONTROL_LABEL}"
    if len(title) > MAX_NAME:
        title = title.replace(experiment.tap, short_tap(experiment.tap))
    return f"{subject} · {title}" if subject else title


def overlay_name(kind: str, experiment: Experiment) -> str:
    """``|diff| U-Net bn+skips`` (plugin: ``|diff| U-Net bn+skips*``)."""
    arch = ARCH_NAMES.get(experiment.arch, experiment.arch)
    mark = "*" if getattr(experiment, "study_experiment", None) is not None else ""
    return f"{OVERLAY_SHORT[kind]} {arch} {short_tap(experiment.tap)}{mark}"


def original_layer(
    data: np.ndarray,
    subject: str,
    spacing: tuple[float, float, float],
    contrast: tuple[float, float],
    note: str = "original",
) -> LayerData:
    """The original; its name (``S01 · original``) is also its grid cell's title."""
    meta = {"role": "original", "subject": subject}
    return image_layer(data, f"{subject} · {note}", spacing, contrast, meta)


def recon_layer(
    data: np.ndarray,
    experiment: Experiment,
    subject: str,
    spacing: tuple[float, float, float],
    contrast: tuple[float, float],
    slot: int,
    show_subject: bool = False,
) -> LayerData:
    """A reconstruction; its name (``U-Net bottleneck+skips``) titles its grid cell.

    ``show_subject``: prefix the reconstructed subject (when the grid's original is another).
    """
    meta = {"role": "recon", "subject": subject, "experiment": experiment, "slot": slot}
    name = experiment_title(experiment, subject if show_subject else None)
    return image_layer(data, name, spacing, contrast, meta)


def overlay_layer(
    data: np.ndarray,
    kind: str,
    experiment: Experiment,
    subject: str,
    spacing: tuple[float, float, float],
    slot: int,
    contrast: tuple[float, float] | None = None,
) -> LayerData:
    """An overlay map (SSIM, |difference|, deformation) drawn on top of its reconstruction.

    ``contrast``: the colour scale (one per subject and kind across the grid); default:
    0 to the map's own 99.5th percentile (SSIM: 0 to 1).
    """
    if contrast is None:
        if kind == "ssim":
            contrast = (0.0, 1.0)
        else:
            hi = float(np.nanpercentile(data, 99.5)) if data.size else 1.0
            contrast = (0.0, hi if np.isfinite(hi) and hi > 0 else 1.0)
    kwargs = {
        "name": overlay_name(kind, experiment),
        "scale": tuple(float(s) for s in spacing),
        "contrast_limits": contrast,
        "metadata": {META_KEY: {"role": kind, "subject": subject, "experiment": experiment, "slot": slot}},
        **_OVERLAY_STYLE[kind],
    }
    return (data, kwargs, "image")


def placeholder_layer(kind: str, experiment: Experiment, subject: str, slot: int) -> LayerData:
    """An overlay whose map is still being computed: its existing layer stays, hidden."""
    meta = {"role": kind, "subject": subject, "experiment": experiment, "slot": slot, "waiting": True}
    kwargs = {
        "name": overlay_name(kind, experiment) + " …",
        "metadata": {META_KEY: meta},
    }
    return (None, kwargs, "image")  # type: ignore[return-value]


def layer_key(meta: dict[str, Any]) -> tuple[str, int]:
    """Identity of a managed layer inside the current view: (role, slot)."""
    return (str(meta.get("role")), int(meta.get("slot", -1)))
