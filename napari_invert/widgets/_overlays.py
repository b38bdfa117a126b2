"""Overlay maps of the Compare widget: what to compute, computing it (worker side), caching.

Worker side: :func:`compute_overlays` receives plain data (:class:`OverlayRequest`), never a
widget; it reports ``(done, total)`` through ``on_step`` and stops between two maps when
``should_stop()`` is true (a running ANTs registration finishes first). Each map comes
back with its display maximum (99.5th percentile), computed in the worker so the main
thread only sets layer data and contrast.

Display: one colour scale per subject and overlay kind across the grid
(:func:`shared_limits`): the largest per-cell maximum, so red means the same number of
mm (deformation) or intensity units (|difference|) in every cell.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_invert.errors import NapariInvertError
from napari_invert.study.results import Experiment, StudyResults
from napari_invert.widgets._core_api import (
    Cell,
    SubjectView,
    deformation_magnitude,
    load_volume,
    save_volume,
    ssim_map,
)
from napari_invert.widgets._plugin_results import is_plugin
from napari_invert.widgets._study_data import deformation_cache_path, evaluated_deformation_path
from napari_invert.widgets._workers import describe_error

OverlayKey = tuple[str, Experiment, str, str]  # (kind, experiment, recon subject, reference subject)

#: Units of each overlay's values (shown beside its colour scale).
OVERLAY_UNITS: dict[str, str] = {"ssim": "", "diff": "intensity units", "deformation": "mm"}


@dataclass
class OverlayRequest:
    """One overlay map to make: ``kind`` of ``recon`` against ``original``."""

    key: OverlayKey
    original: np.ndarray
    recon: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    data_range: float = 1.0
    preset: str = "fast"
    evaluated_path: Path | None = None
    cache_path: Path | None = None


@dataclass
class OverlayResult:
    """Maps made by one :func:`compute_overlays` call."""

    maps: dict[OverlayKey, np.ndarray] = field(default_factory=dict)
    maxima: dict[OverlayKey, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # kind -> first error message
    cancelled: bool = False
    done: int = 0
    total: int = 0


def overlay_key(kind: str, cell: Cell) -> OverlayKey:
    return (kind, cell.experiment, cell.recon_subject, cell.ref_subject)


def overlay_requests(
    view: SubjectView,
    study: StudyResults,
    kinds: Sequence[str],
    preset: str,
    skip: Callable[[OverlayKey], bool],
) -> list[OverlayRequest]:
    """What to compute for ``view``: every cell x kind not already cached or pending.

    Deformation of a study reconstruction looks for the evaluation's map of a true pair,
    then the GUI cache (``evaluation/cache/deformation``); a plugin reconstruction is
    never cached under the study's names.
    """
    requests = []
    for kind in kinds:
        for cell, recon in zip(view.cells, view.recons):
            key = overlay_key(kind, cell)
            if skip(key):
                continue
            cache_path = evaluated = None
            if kind == "deformation" and not is_plugin(cell.experiment):
                folder = study.folder
                cache_path = deformation_cache_path(
                    folder, cell.experiment, cell.recon_subject, cell.ref_subject
                )
                if cell.recon_subject == cell.ref_subject:
                    evaluated = evaluated_deformation_path(folder, cell.experiment, cell.recon_subject)
            requests.append(
                OverlayRequest(
                    key,
                    view.reference,
                    recon,
                    view.mask,
                    study.spacing,
                    study.affine,
                    data_range=view.data_range,
                    preset=preset,
                    evaluated_path=evaluated,
                    cache_path=cache_path,
                )
            )
    return requests


def display_max(data: np.ndarray) -> float:
    """99.5th percentile of a map (> 0, finite; 1.0 for an empty or all-zero map)."""
    if not data.size:
        return 1.0
    hi = float(np.nanpercentile(data, 99.5))
    return hi if np.isfinite(hi) and hi > 0 else 1.0


def compute_overlays(
    requests: Sequence[OverlayRequest],
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> OverlayResult:
    """Make every requested map (runs in a worker thread).

    Deformation maps are read from the evaluation's maps (``evaluated_path``) or the GUI
    cache (``cache_path``), else computed with ANTs and written to ``cache_path``.
    ``on_step(done, total)`` after each map; ``should_stop()`` checked before each map.
    """
    out = OverlayResult(total=len(requests))
    if on_step is not None:
        on_step(0, out.total)
    for req in requests:
        if should_stop is not None and should_stop():
            out.cancelled = True
            break
        kind = req.key[0]
        if kind not in out.errors:
            try:
                data = _make_map(req)
                out.maps[req.key] = data
                out.maxima[req.key] = 1.0 if kind == "ssim" else display_max(data)
            except (NapariInvertError, ValueError, RuntimeError, OSError) as exc:
                out.errors[kind] = describe_error(exc)
        out.done += 1
        if on_step is not None:
            on_step(out.done, out.total)
    return out


def _make_map(req: OverlayRequest) -> np.ndarray:
    kind = req.key[0]
    if kind == "ssim":
        return ssim_map(req.original, req.recon, req.data_range)
    if kind == "diff":  # display-only: the voxel-wise absolute error of the reconstruction
        return np.abs(req.recon - req.original).astype(np.float32)
    if kind == "deformation":
        return _deformation_map(req)
    raise ValueError(f"unknown overlay kind {kind!r}")


def _deformation_map(req: OverlayRequest) -> np.ndarray:
    for path in (req.evaluated_path, req.cache_path):
        if path is not None and path.is_file():
            array, _ = load_volume(path, kind="image")
            return np.asarray(array, dtype=np.float32)
    magnitude = register_in_process(req)
    if req.cache_path is not None:
        with contextlib.suppress(OSError, NapariInvertError):  # a read-only study still works
            save_volume(req.cache_path, magnitude, req.affine)
    return magnitude


_POOL: ProcessPoolExecutor | None = None


def register_in_process(req: OverlayRequest) -> np.ndarray:
    """ANTs registration in a separate (spawned) process: magnitude map in mm.

    ANTs holds Python's GIL while it runs, so calling it from a thread would still freeze
    the viewer; the worker thread only waits for the process here. One process is kept
    for the session (ANTs is imported once).
    """
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        magnitude, _ = _POOL.submit(
            deformation_magnitude, req.original, req.recon, req.mask, req.spacing, req.preset
        ).result()
    except BrokenProcessPool as exc:
        _POOL = None
        raise RuntimeError(f"the registration process stopped ({exc})") from None
    return np.asarray(magnitude, dtype=np.float32)


def shared_limits(kind: str, maxima: Iterable[float]) -> tuple[float, float]:
    """One contrast range for every cell of a subject: ``(0, largest cell maximum)``."""
    if kind == "ssim":
        return (0.0, 1.0)
    values = [m for m in maxima if np.isfinite(m) and m > 0]
    return (0.0, max(values) if values else 1.0)


def scale_text(kind: str, limits: tuple[float, float], title: str) -> str:
    """``deformation (mm): 0 – 6.3 mm`` — the range of one colour bar, in words."""
    unit = OVERLAY_UNITS.get(kind, "")
    lo, hi = limits
    return f"{title}: {lo:.3g} – {hi:.3g}" + (f" {unit}" if unit else "")


class MapCache:
    """In-memory LRU cache of overlay maps (and their display maxima), bounded in bytes."""

    def __init__(self, max_bytes: int = 768 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[np.ndarray, float]] = OrderedDict()
        self._bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        item = self.get_item(key)
        return None if item is None else item[0]

    def get_item(self, key: Hashable) -> tuple[np.ndarray, float] | None:
        """``(map, display maximum)`` or ``None``."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: Hashable, value: np.ndarray, maximum: float | None = None) -> None:
        if key in self._items:
            self._bytes -= self._items.pop(key)[0].nbytes
        self._items[key] = (value, display_max(value) if maximum is None else float(maximum))
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (old, _) = self._items.popitem(last=False)
            self._bytes -= old.nbytes

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


def deformation_on_demand() -> tuple[bool, str]:
    """Whether a registration can be computed here, and why not (``(False, reason)``)."""
    import importlib.util

    from napari_invert.widgets._core_api import has_core_function

    if not has_core_function("napari_invert.metrics.deformation", "register_pair"):
        return False, "napari_invert.metrics.deformation.register_pair is not available"
    if importlib.util.find_spec("ants") is None:
        return False, "ANTs is not installed (pip install antspyx)"
    return True, ""
