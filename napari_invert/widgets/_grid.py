"""The Compare widget's grid: managed layers in grid order, cell titles and colour bars.

One grid cell per reconstruction (the reconstruction, then its overlays), the original
last. Layers are updated in place (``layer.data = ...``) when a layer of the same role and
slot exists with the same shape, so navigating does not remove and re-add layers. The
first layer of each cell shows its name as the cell's title (napari's per-layer
``name_overlay``); each overlay layer shows its colour bar (``layer.colorbar``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_invert.widgets._core_api import SubjectView
from napari_invert.widgets._layers import (
    META_KEY,
    LayerData,
    display_range,
    layer_key,
    original_layer,
    overlay_layer,
    placeholder_layer,
    recon_layer,
)
from napari_invert.widgets._overlays import MapCache, overlay_key, shared_limits

#: Where each overlay kind's colour bar sits in its cell (they never overlap).
COLORBAR_POSITION: dict[str, str] = {
    "ssim": "bottom_left",
    "diff": "bottom_right",
    "deformation": "top_right",
}
TITLE_FONT_SIZE = 10


def grid_shape(n_cells: int) -> tuple[int, int]:
    """Rows and columns of the grid: one row up to 4 cells, else a near-square layout."""
    if n_cells <= 4:
        return (1, max(1, n_cells))
    cols = math.ceil(math.sqrt(n_cells))
    return (math.ceil(n_cells / cols), cols)


def short_labels(labels: Sequence[str]) -> list[str]:
    """Column titles: the architecture alone when that is unambiguous, else arch + tap."""
    archs = [label.split(" ")[0] for label in labels]
    without_variant = [label.rsplit(" (", 1)[0] for label in labels]
    if len(set(archs)) == len(archs):
        return archs
    if len(set(without_variant)) == len(without_variant):
        return without_variant
    return list(labels)


def grid_layers(
    view: SubjectView,
    spacing: tuple[float, float, float],
    active: Sequence[str],
    cache: MapCache,
    current: Sequence[Any],
    original_note: str = "original",
) -> tuple[list[LayerData], int, dict[str, tuple[float, float]]]:
    """Layers of the view in grid order, the grid stride, and each overlay's colour scale.

    An active overlay whose maps are all cached is shown on one scale per subject
    (:func:`shared_limits`); one still being computed keeps its current layers hidden
    (placeholders), so the grid does not jump while the maps arrive.
    """
    contrast = display_range(view.reference)
    ready = [k for k in active if all(overlay_key(k, c) in cache for c in view.cells)]
    shown = {(lyr.metadata[META_KEY]["role"], lyr.metadata[META_KEY].get("slot")) for lyr in current}
    waiting = [k for k in active if k not in ready and all((k, i) in shown for i in range(len(view.cells)))]
    scales = {}
    for kind in ready:
        maxima = [cache.get_item(overlay_key(kind, c))[1] for c in view.cells]  # type: ignore[index]
        scales[kind] = shared_limits(kind, maxima)
    layers: list[LayerData] = []
    for slot, (cell, recon) in enumerate(zip(view.cells, view.recons)):
        exp, subject = cell.experiment, cell.recon_subject
        other = subject != view.ref_subject  # a pair from the matrix: say whose reconstruction
        layers.append(recon_layer(recon, exp, subject, spacing, contrast, slot, show_subject=other))
        for kind in active:
            if kind in ready:
                data = cache.get(overlay_key(kind, cell))
                assert data is not None
                layers.append(overlay_layer(data, kind, exp, subject, spacing, slot, scales[kind]))
            elif kind in waiting:
                layers.append(placeholder_layer(kind, exp, subject, slot))
    layers.append(original_layer(view.reference, view.ref_subject, spacing, contrast, original_note))
    return layers, 1 + len(ready) + len(waiting), scales


def managed_layers(viewer: Any) -> list[Any]:
    return [lyr for lyr in viewer.layers if META_KEY in lyr.metadata]


def _set(layer: Any, name: str, value: Any) -> None:
    """Set a layer property only when it changes (every change redraws the canvas)."""
    current = getattr(layer, name)
    same = np.array_equal(np.asarray(current), np.asarray(value)) if name != "name" else current == value
    if not same:
        setattr(layer, name, value)


def _rename(viewer: Any, layer: Any, name: str) -> None:
    """Give ``layer`` its name, first moving aside another layer that holds it."""
    if layer.name == name:
        return
    for other in viewer.layers:
        if other is not layer and other.name == name:
            other.name = f"{name} ({id(other)})"
    layer.name = name


def apply_layers(viewer: Any, desired: list[LayerData]) -> list[Any]:
    """Make the viewer's managed layers match ``desired`` (in grid order); returns them.

    A layer of the same role and slot is reused (its data set in place); properties are
    only set when they change, so navigating redraws once per layer, not once per property.
    """
    layers = viewer.layers
    managed = {layer_key(lyr.metadata[META_KEY]): lyr for lyr in managed_layers(viewer)}
    ordered, names = [], []
    for data, kwargs, _ in desired:
        key = layer_key(kwargs["metadata"][META_KEY])
        name = kwargs["name"]
        layer = managed.pop(key, None)
        if data is None:  # placeholder: keep the existing layer, hidden, until its data arrives
            if layer is not None:
                _set(layer, "visible", False)
                layer.metadata = kwargs["metadata"]
                ordered.append(layer)
                names.append(name)
            continue
        if layer is not None and layer.data.shape == data.shape and layer.ndim == data.ndim:
            layer.metadata = kwargs["metadata"]
            _set(layer, "scale", kwargs["scale"])
            if tuple(layer.contrast_limits_range) != tuple(kwargs["contrast_limits"]):
                layer.contrast_limits_range = kwargs["contrast_limits"]
            _set(layer, "contrast_limits", kwargs["contrast_limits"])
            layer.data = data
            _set(layer, "visible", True)
        else:
            if layer is not None:
                layers.remove(layer)
            taken = any(other.name == name for other in layers)
            layer = viewer.add_image(data, **{**kwargs, "name": f"{name} (new)" if taken else name})
        ordered.append(layer)
        names.append(name)
    for layer in managed.values():
        layers.remove(layer)
    for layer, name in zip(ordered, names):
        _rename(viewer, layer, name)
    for target, layer in enumerate(ordered):
        current = layers.index(layer)
        if current != target:
            layers.move(current, target)
    decorate(ordered)
    return ordered


def decorate(ordered: Sequence[Any]) -> None:
    """Title the first layer of every cell; give every overlay layer its colour bar."""
    for layer in ordered:
        role = layer.metadata[META_KEY].get("role")
        first_in_cell = role in ("recon", "original")
        title = getattr(layer, "name_overlay", None)
        if title is not None:
            with contextlib.suppress(AttributeError, ValueError):
                title.visible = first_in_cell
                if first_in_cell:
                    title.font_size = TITLE_FONT_SIZE
                    title.box = True
        bar = getattr(layer, "colorbar", None)
        if bar is not None:
            with contextlib.suppress(AttributeError, ValueError):
                bar.visible = role in COLORBAR_POSITION
                if role in COLORBAR_POSITION:
                    bar.position = COLORBAR_POSITION[role]
                    bar.box = True
                    bar.size = (14, 110)
                    bar.font_size = 9


def cell_titles(viewer: Any) -> list[str]:
    """The title shown in each grid cell (for tests and scripts), in grid order."""
    out = []
    for layer in managed_layers(viewer):
        overlay = getattr(layer, "name_overlay", None)
        if overlay is not None and overlay.visible:
            out.append(layer.name)
    return out


def set_grid(viewer: Any, n_layers: int, stride: int) -> bool:
    """Grid mode with ``stride`` layers per cell; ``True`` when the layout changed."""
    n_cells = -(-n_layers // stride)
    shape = grid_shape(n_cells)
    grid = viewer.canvas.grid
    changed = (grid.stride, tuple(grid.shape), grid.enabled) != (stride, shape, True)
    grid.stride = stride
    grid.shape = shape
    grid.enabled = True
    return changed
