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


def original_layer(
    data: np.ndarray,
    subject: str,
    spacing: tuple[float, float, float],
    contrast: tuple[float, float],
    note: str = "original",
) -> LayerData:
    return image_layer(data, f"{subject} {note}", spacing, contrast, {"role": "original", "subject": subject})


def recon_layer(
    data: np.ndarray,
    experiment: Experiment,
    subject: str,
    spacing: tuple[float, float, float],
    contrast: tuple[float, float],
    slot: int,
) -> LayerData:
    meta = {"role": "recon", "subject": subject, "experiment": experiment, "slot": slot}
    return image_layer(data, f"{subject} {experiment.label}", spacing, contrast, meta)


def overlay_layer(
    data: np.ndarray,
    kind: str,
    experiment: Experiment,
    subject: str,
    spacing: tuple[float, float, float],
    slot: int,
) -> LayerData:
    """An overlay map (SSIM, |difference|, deformation) drawn on top of its reconstruction."""
    if kind == "ssim":
        contrast = (0.0, 1.0)
    else:
        hi = float(np.nanpercentile(data, 99.5)) if data.size else 1.0
        contrast = (0.0, hi if np.isfinite(hi) and hi > 0 else 1.0)
    kwargs = {
        "name": f"{subject} {experiment.label} · {OVERLAY_TITLES[kind]}",
        "scale": tuple(float(s) for s in spacing),
        "contrast_limits": contrast,
        "metadata": {META_KEY: {"role": kind, "subject": subject, "experiment": experiment, "slot": slot}},
        **_OVERLAY_STYLE[kind],
    }
    return (data, kwargs, "image")


def layer_key(meta: dict[str, Any]) -> tuple[str, int]:
    """Identity of a managed layer inside the current view: (role, slot)."""
    return (str(meta.get("role")), int(meta.get("slot", -1)))
