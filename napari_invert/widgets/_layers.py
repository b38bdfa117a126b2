"""Layer descriptions (napari ``LayerDataTuple``) for originals, reconstructions, overlays.

Shared by the reader contribution and the Compare widget so both show the same names,
colormaps and contrast. Only display settings live here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_invert.study.results import Experiment

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


ARCH_NAMES: dict[str, str] = {"unet": "U-Net", "segnet": "SegNet"}


def experiment_title(experiment: Experiment) -> str:
    """What a reconstruction cell shows: ``U-Net bottleneck+skips`` (``· plugin``)."""
    title = f"{ARCH_NAMES.get(experiment.arch, experiment.arch)} {experiment.tap}"
    return title + (" · plugin" if getattr(experiment, "study_experiment", None) is not None else "")


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
) -> LayerData:
    """A reconstruction; its name (``S01 · U-Net bottleneck+skips``) titles its grid cell."""
    meta = {"role": "recon", "subject": subject, "experiment": experiment, "slot": slot}
    return image_layer(data, f"{subject} · {experiment_title(experiment)}", spacing, contrast, meta)


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
        "name": f"{OVERLAY_TITLES[kind]} · {experiment_title(experiment)}",
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
        "name": f"{OVERLAY_TITLES[kind]} · {experiment_title(experiment)} (computing)",
        "metadata": {META_KEY: meta},
    }
    return (None, kwargs, "image")  # type: ignore[return-value]


def layer_key(meta: dict[str, Any]) -> tuple[str, int]:
    """Identity of a managed layer inside the current view: (role, slot)."""
    return (str(meta.get("role")), int(meta.get("slot", -1)))
