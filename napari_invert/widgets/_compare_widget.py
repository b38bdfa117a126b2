"""Compare widget: a subject's original next to its reconstructions, with overlays.

Layout in the viewer (grid mode, one cell per reconstruction, the original last)::

    [recon, exp 1 (+ overlays)] [recon, exp 2 (+ overlays)] ... [original]

All layers share the viewer's dims, so slicing (and the 3D view) stays linked across the
grid. Overlays (local SSIM map, absolute difference, deformation magnitude) are computed
on demand in a thread worker through the core and cached in memory (the deformation
magnitude also on disk, in ``evaluation/cache/deformation``). The subject's metrics come
from ``evaluation/metrics.csv`` when the study was evaluated, else they are computed on
demand (SSIM, correlation) via the core.

Keyboard (bound on the viewer): ``PageDown`` next subject, ``PageUp`` previous subject.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import FileEdit
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_invert.config import StudyConfig
from napari_invert.errors import NapariInvertError
from napari_invert.study.results import Experiment, StudyResults
from napari_invert.widgets._core_api import (
    Cell,
    SubjectView,
    deformation_magnitude,
    load_view,
    load_volume,
    save_volume,
    ssim_map,
)
from napari_invert.widgets._layers import (
    META_KEY,
    OVERLAY_KINDS,
    OVERLAY_TITLES,
    LayerData,
    display_range,
    layer_key,
    original_layer,
    overlay_layer,
    recon_layer,
)
from napari_invert.widgets._state import open_study, session_for
from napari_invert.widgets._study_data import (
    MetricsTable,
    MetricValue,
    deformation_cache_path,
    deformation_status,
    evaluated_deformation_path,
    folds_of,
    read_metrics,
    sort_metrics,
)
from napari_invert.widgets._study_widget import scrolled, unwrap_viewer
from napari_invert.widgets._workers import describe_error, report_error, start_worker

if TYPE_CHECKING:
    import napari

    from napari_invert.widgets._matrix_dock import SimilarityMatrixWidget

NEXT_KEY = "PageDown"
PREVIOUS_KEY = "PageUp"

OverlayKey = tuple[str, Experiment, str, str]  # (kind, experiment, recon subject, reference subject)


# -- worker side (module level: receives data, never widgets) -----------------------------
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


def compute_overlays(
    requests: Sequence[OverlayRequest],
) -> tuple[dict[OverlayKey, np.ndarray], dict[str, str]]:
    """Make every requested map; returns ``(maps, {kind: first error message})``.

    Runs in a worker thread. Deformation maps are read from the evaluation's maps
    (``evaluated_path``) or the GUI cache (``cache_path``), else computed with ANTs and
    written to ``cache_path``.
    """
    maps: dict[OverlayKey, np.ndarray] = {}
    errors: dict[str, str] = {}
    for req in requests:
        kind = req.key[0]
        if kind in errors:
            continue
        try:
            if kind == "ssim":
                maps[req.key] = ssim_map(req.original, req.recon, req.data_range)
            elif kind == "diff":
                # display-only: the voxel-wise absolute error of the reconstruction
                maps[req.key] = np.abs(req.recon - req.original).astype(np.float32)
            elif kind == "deformation":
                maps[req.key] = _deformation_map(req)
        except (NapariInvertError, ValueError, RuntimeError, OSError) as exc:
            errors[kind] = describe_error(exc)
    return maps, errors


def _deformation_map(req: OverlayRequest) -> np.ndarray:
    for path in (req.evaluated_path, req.cache_path):
        if path is not None and path.is_file():
            array, _ = load_volume(path, kind="image")
            return np.asarray(array, dtype=np.float32)
    magnitude, _ = deformation_magnitude(req.original, req.recon, req.mask, req.spacing, req.preset)
    if req.cache_path is not None:
        with contextlib.suppress(OSError, NapariInvertError):  # a read-only study still works
            save_volume(req.cache_path, magnitude, req.affine)
    return magnitude


class MapCache:
    """In-memory LRU cache of overlay maps, bounded in bytes."""

    def __init__(self, max_bytes: int = 768 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> np.ndarray | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: Hashable, value: np.ndarray) -> None:
        if key in self._items:
            self._bytes -= self._items.pop(key).nbytes
        self._items[key] = value
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


# -- the widget --------------------------------------------------------------------------------
class CompareWidget(QWidget):
    """Browse subjects; compare originals and reconstructions side by side."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = unwrap_viewer(viewer)
        self._session = session_for(self._viewer)
        self._study: StudyResults | None = None
        self._config: StudyConfig | None = None
        self._table: MetricsTable | None = None
        self._view: SubjectView | None = None
        self._pair: tuple[Experiment, str, str, dict[str, float]] | None = None
        self._request = 0
        self._cache = MapCache()
        self._pending: set[OverlayKey] = set()
        self._failed_kinds: dict[str, str] = {}
        self._data_ranges: dict[str, float] = {}
        self._oriented = False
        self._workers: set[Any] = set()
        self._matrix: SimilarityMatrixWidget | None = None
        self._deformation_reason = ""
        self._build_ui()
        self._bind_keys()
        self._session.study_changed.connect(self._on_study_changed)
        if self._session.study is not None:
            self._on_study_changed(self._session.study)

    # -- UI --------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.study_dir = FileEdit(mode="d", label="Study")
        self.study_dir.line_edit.native.setMinimumWidth(60)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(lambda: self.open(self.study_dir.value))
        self.study_label = QLabel("No study opened.")
        self.study_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.study_label, stretch=1)
        row.addWidget(self.open_button)
        self.variant_combo = QComboBox()
        self.variant_combo.currentTextChanged.connect(self._on_variant_changed)
        self.experiment_list = QListWidget()
        self.experiment_list.setMaximumHeight(64)
        self.experiment_list.itemChanged.connect(self._on_experiments_changed)

        self.subject_list = QListWidget()
        self.subject_list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.subject_list.currentRowChanged.connect(self._on_subject_row_changed)
        self.previous_button = QPushButton(f"◀ Previous ({PREVIOUS_KEY})")
        self.next_button = QPushButton(f"Next ({NEXT_KEY}) ▶")
        self.previous_button.clicked.connect(self.previous_subject)
        self.next_button.clicked.connect(self.next_subject)
        nav = QHBoxLayout()
        nav.addWidget(self.previous_button)
        nav.addWidget(self.next_button)

        self.overlay_boxes: dict[str, QCheckBox] = {}
        overlay_box = QGroupBox("Overlays (on each reconstruction)")
        overlay_layout = QVBoxLayout(overlay_box)
        for kind in OVERLAY_KINDS:
            box = QCheckBox(OVERLAY_TITLES[kind])
            box.toggled.connect(self._on_overlay_toggled)
            self.overlay_boxes[kind] = box
            overlay_layout.addWidget(box)
        self.deformation_note = QLabel("")
        self.deformation_note.setWordWrap(True)
        overlay_layout.addWidget(self.deformation_note)

        self.metrics_table = QTableWidget(0, 0)
        self.metrics_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.metrics_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.metrics_title = QLabel("Metrics")
        self.metrics_title.setWordWrap(True)
        self.matrix_button = QPushButton("Similarity matrix…")
        self.matrix_button.clicked.connect(self.show_matrix)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Variant", self.variant_combo)
        form.addRow("Reconstructions", self.experiment_list)

        layout = QVBoxLayout(scrolled(self))
        self.setMinimumHeight(460)  # the essentials stay visible when the matrix dock opens below
        layout.addWidget(self.study_dir.native)
        layout.addLayout(row)
        layout.addLayout(form)
        layout.addWidget(QLabel("Subjects"))
        self.subject_list.setMinimumHeight(60)
        self.subject_list.setMaximumHeight(110)
        layout.addWidget(self.subject_list)
        layout.addLayout(nav)
        layout.addWidget(overlay_box)
        layout.addWidget(self.metrics_title)
        layout.addWidget(self.metrics_table)
        layout.addWidget(self.matrix_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._set_enabled(False)

    def _set_enabled(self, enabled: bool) -> None:
        for widget in (
            self.variant_combo,
            self.experiment_list,
            self.subject_list,
            self.previous_button,
            self.next_button,
            self.matrix_button,
            *self.overlay_boxes.values(),
        ):
            widget.setEnabled(enabled)
        if enabled:
            self._apply_deformation_state()

    def _bind_keys(self) -> None:
        self._viewer.bind_key(NEXT_KEY, self._key_next, overwrite=True)
        self._viewer.bind_key(PREVIOUS_KEY, self._key_previous, overwrite=True)

    def _key_next(self, _viewer: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # widget already deleted
            self.next_subject()

    def _key_previous(self, _viewer: Any = None) -> None:
        with contextlib.suppress(RuntimeError):
            self.previous_subject()

    # -- public API ----------------------------------------------------------------------
    @property
    def study(self) -> StudyResults | None:
        return self._study

    @property
    def busy(self) -> bool:
        """True while a worker (loading, overlays) is running."""
        return bool(self._workers)

    @property
    def current_subject(self) -> str | None:
        row = self.subject_list.currentRow()
        if self._study is None or row < 0:
            return None
        return self._study.subject_ids[row]

    @property
    def current_view(self) -> SubjectView | None:
        return self._view

    def selected_experiments(self) -> list[Experiment]:
        """Experiments ticked in the list (reconstructions shown, in grid order)."""
        out = []
        for i in range(self.experiment_list.count()):
            item = self.experiment_list.item(i)
            if item.checkState() == Qt.Checked:
                out.append(item.data(Qt.UserRole))
        return out

    def open(self, path: str | Path) -> StudyResults | None:
        """Open a study folder and publish it to the viewer's other widgets."""
        try:
            results, config = open_study(path)
        except Exception as exc:
            self.status.setText(f"Could not open: {describe_error(exc)}")
            report_error("napari-invert: cannot open study", exc)
            return None
        self._session.set_study(results, config)
        return results

    def set_subject(self, index: int) -> None:
        """Show subject ``index`` (cohort order) with all selected reconstructions."""
        if self._study is None:
            return
        n = len(self._study.subject_ids)
        index = max(0, min(n - 1, int(index)))
        self._pair = None
        if self.subject_list.currentRow() != index:
            self.subject_list.setCurrentRow(index)  # -> _on_subject_row_changed -> reload
        else:
            self._reload()

    def next_subject(self) -> None:
        if self._study is not None:
            self.set_subject((self.subject_list.currentRow() + 1) % len(self._study.subject_ids))

    def previous_subject(self) -> None:
        if self._study is not None:
            self.set_subject((self.subject_list.currentRow() - 1) % len(self._study.subject_ids))

    def set_overlay(self, kind: str, on: bool) -> None:
        """Tick/untick an overlay (``ssim``, ``diff``, ``deformation``)."""
        self.overlay_boxes[kind].setChecked(on)

    def show_pair(
        self,
        experiment: Experiment,
        recon_subject: str,
        candidate: str,
        similarity: dict[str, float] | None = None,
    ) -> None:
        """Show reconstruction of ``recon_subject`` next to candidate original ``candidate``.

        ``similarity``: values to show in the metrics table (e.g. from the matrix dock).
        """
        if self._study is None:
            return
        self._pair = (experiment, recon_subject, candidate, dict(similarity or {}))
        self._reload()

    def show_matrix(self) -> SimilarityMatrixWidget | None:
        """Open (or raise) the similarity-matrix dock."""
        from napari_invert.widgets._matrix_dock import SimilarityMatrixWidget

        if self._study is None:
            return None
        if self._matrix is None:
            self._matrix = SimilarityMatrixWidget(self)
            try:
                self._viewer.window.add_dock_widget(self._matrix, name="Similarity matrix", area="right")
            except Exception as exc:  # no window (headless viewer model): keep the widget only
                report_error("napari-invert: cannot dock the similarity matrix", exc)
        self._matrix.set_study(self._study, self.variant_combo.currentText())
        return self._matrix

    # -- study / selection changes --------------------------------------------------------------
    def _on_study_changed(self, study: StudyResults | None) -> None:
        self._study = study
        self._config = self._session.config
        self._view = None
        self._pair = None
        self._cache.clear()
        self._pending.clear()
        self._failed_kinds.clear()
        self._data_ranges.clear()
        self._table = None
        if study is None:
            self._set_enabled(False)
            self.study_label.setText("No study opened.")
            return
        if Path(str(self.study_dir.value)) != study.root:
            self.study_dir.value = study.root
        try:
            self._table = read_metrics(study.folder)
        except NapariInvertError as exc:
            show_warning(f"napari-invert: {exc}; metrics are computed on demand instead")
        name = self._config.name if self._config is not None else study.root.name
        evaluated = "evaluated" if self._table is not None else "not evaluated (metrics computed on demand)"
        self.study_label.setText(f"Study '{name}': {len(study.subject_ids)} subjects, {evaluated}")
        ok, reason = deformation_status(study, self._config, self._table)
        self._deformation_reason = "" if ok else reason
        self._fill_subjects(study)
        with _blocked(self.variant_combo):
            self.variant_combo.clear()
            self.variant_combo.addItems(study.variants)
        self._fill_experiments()
        self._set_enabled(True)
        if self._matrix is not None:
            self._matrix.set_study(study, self.variant_combo.currentText())
        self.set_subject(0)

    def _fill_subjects(self, study: StudyResults) -> None:
        fold_of = {s: f.fold for f in folds_of(study) for s in f.private}
        with _blocked(self.subject_list):
            self.subject_list.clear()
            for sid in study.subject_ids:
                item = QListWidgetItem(f"{sid}  (private in fold {fold_of.get(sid, '–')})")
                self.subject_list.addItem(item)

    def _fill_experiments(self) -> None:
        variant = self.variant_combo.currentText()
        experiments = (
            [] if self._study is None else [e for e in self._study.experiments() if e.variant == variant]
        )
        with _blocked(self.experiment_list):
            self.experiment_list.clear()
            for exp in experiments:
                item = QListWidgetItem(exp.label)
                item.setData(Qt.UserRole, exp)
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked)
                self.experiment_list.addItem(item)
        if not experiments and self._study is not None:
            self.status.setText(f"No reconstructions for variant '{variant}' yet: showing originals only.")

    def _apply_deformation_state(self) -> None:
        box = self.overlay_boxes["deformation"]
        reason = self._deformation_reason or self._failed_kinds.get("deformation", "")
        if reason:
            with _blocked(box):
                box.setChecked(False)
            box.setEnabled(False)
            box.setToolTip(reason)
            short = reason if len(reason) <= 60 else reason[:57].rstrip() + "… (see tooltip)"
            self.deformation_note.setText(f"Deformation unavailable: {short}")
            self.deformation_note.setToolTip(reason)
        else:
            box.setEnabled(True)
            box.setToolTip(
                "Magnitude (mm) of the ANTs deformation mapping the reconstruction onto the original"
            )
            self.deformation_note.setText("")

    def _on_variant_changed(self, _text: str) -> None:
        self._fill_experiments()
        if self._matrix is not None and self._study is not None:
            self._matrix.set_study(self._study, self.variant_combo.currentText())
        self._pair = None
        self._reload()

    def _on_experiments_changed(self, _item: QListWidgetItem) -> None:
        self._pair = None
        self._reload()

    def _on_subject_row_changed(self, row: int) -> None:
        if row >= 0:
            self._pair = None
            self._reload()
            if self._matrix is not None:
                self._matrix.highlight_subject(self.current_subject)

    def _on_overlay_toggled(self, _on: bool) -> None:
        self._ensure_overlays()
        self._sync_layers()

    # -- loading ---------------------------------------------------------------------------------
    def _cells(self) -> tuple[str, list[Cell]] | None:
        if self._study is None:
            return None
        if self._pair is not None:
            experiment, recon_subject, candidate, _ = self._pair
            return candidate, [Cell(experiment, recon_subject, candidate)]
        subject = self.current_subject
        if subject is None:
            return None
        return subject, [Cell(e, subject, subject) for e in self.selected_experiments()]

    def _reload(self) -> None:
        cells = self._cells()
        if cells is None or self._study is None:
            return
        ref_subject, cell_list = cells
        self._request += 1
        token = self._request
        variant = cell_list[0].experiment.variant if cell_list else self.variant_combo.currentText()
        self.status.setText(f"Loading {ref_subject}…")
        self._start(
            load_view,
            self._study,
            variant,
            ref_subject,
            cell_list,
            self._table is None,
            self._data_ranges.get(variant),
            on_returned=lambda view: self._on_view_loaded(token, view),
            what=f"load {ref_subject}",
        )

    def _start(
        self, func: Any, *args: Any, on_returned: Any, what: str, on_errored: Any | None = None
    ) -> None:
        holder: dict[str, Any] = {}

        def finished() -> None:
            self._workers.discard(holder.get("worker"))

        def errored(exc: BaseException) -> None:
            self.status.setText(f"Could not {what}: {describe_error(exc)}")
            if on_errored is not None:
                on_errored(exc)

        worker = start_worker(
            func,
            *args,
            on_returned=on_returned,
            on_errored=errored,
            on_finished=finished,
            context=f"napari-invert: could not {what}",
        )
        holder["worker"] = worker
        self._workers.add(worker)

    def _on_view_loaded(self, token: int, view: SubjectView) -> None:
        if token != self._request:
            return  # a newer request superseded this one
        self._view = view
        self._data_ranges[view.variant] = view.data_range
        self.status.setText("; ".join(view.problems))
        if view.problems:
            show_warning("napari-invert: " + "; ".join(view.problems))
        self._sync_layers()
        self._update_metrics()
        self._ensure_overlays()

    # -- overlays ------------------------------------------------------------------------------------
    def active_overlays(self) -> list[str]:
        return [
            k
            for k in OVERLAY_KINDS
            if self.overlay_boxes[k].isChecked() and self.overlay_boxes[k].isEnabled()
        ]

    def _overlay_key(self, kind: str, cell: Cell) -> OverlayKey:
        return (kind, cell.experiment, cell.recon_subject, cell.ref_subject)

    def _ensure_overlays(self) -> None:
        view, study = self._view, self._study
        if view is None or study is None:
            return
        preset = self._config.evaluation.deformation.preset if self._config is not None else "fast"
        requests = []
        for kind in self.active_overlays():
            for cell, recon in zip(view.cells, view.recons):
                key = self._overlay_key(kind, cell)
                if key in self._cache or key in self._pending:
                    continue
                cache_path = evaluated = None
                if kind == "deformation":
                    cache_path = deformation_cache_path(
                        study.folder, cell.experiment, cell.recon_subject, cell.ref_subject
                    )
                    if cell.recon_subject == cell.ref_subject:
                        evaluated = evaluated_deformation_path(
                            study.folder, cell.experiment, cell.recon_subject
                        )
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
        if not requests:
            return
        self._pending.update(r.key for r in requests)
        keys = [r.key for r in requests]
        kinds = sorted({k[0] for k in keys})
        self.status.setText(f"Computing {', '.join(OVERLAY_TITLES[k] for k in kinds)}…")

        def done(result: tuple[dict[OverlayKey, np.ndarray], dict[str, str]]) -> None:
            if self._study is not study:  # another study was opened meanwhile
                return
            maps, errors = result
            self._pending.difference_update(keys)
            for key, value in maps.items():
                self._cache.put(key, value)
            for kind, message in errors.items():
                self._overlay_failed(kind, message)
            self.status.setText("")
            self._sync_layers()

        self._start(
            compute_overlays,
            requests,
            on_returned=done,
            what="compute overlays",
            on_errored=lambda _exc: self._pending.difference_update(keys),
        )

    def _overlay_failed(self, kind: str, message: str) -> None:
        show_warning(f"napari-invert: {OVERLAY_TITLES[kind]} overlay failed: {message}")
        box = self.overlay_boxes[kind]
        with _blocked(box):
            box.setChecked(False)
        box.setToolTip(f"Last attempt failed: {message}")
        if kind == "deformation":
            self._failed_kinds[kind] = message
            self._apply_deformation_state()

    # -- layers ----------------------------------------------------------------------------------------
    def _desired_layers(self) -> tuple[list[LayerData], int]:
        view, study = self._view, self._study
        assert view is not None and study is not None
        spacing = study.spacing
        contrast = display_range(view.reference)
        ready = [
            kind
            for kind in self.active_overlays()
            if all(self._overlay_key(kind, cell) in self._cache for cell in view.cells)
        ]
        layers: list[LayerData] = []
        for slot, (cell, recon) in enumerate(zip(view.cells, view.recons)):
            name_subject = cell.recon_subject
            layers.append(recon_layer(recon, cell.experiment, name_subject, spacing, contrast, slot))
            for kind in ready:
                data = self._cache.get(self._overlay_key(kind, cell))
                assert data is not None
                layers.append(overlay_layer(data, kind, cell.experiment, name_subject, spacing, slot))
        note = "original"
        if self._pair is not None:
            note = "original (true match)" if self._pair[1] == self._pair[2] else "candidate original"
        layers.append(original_layer(view.reference, view.ref_subject, spacing, contrast, note))
        return layers, 1 + len(ready)

    def _sync_layers(self) -> None:
        """Make the viewer's managed layers match the current view, in grid order."""
        if self._view is None or self._study is None:
            return
        try:
            desired, stride = self._desired_layers()
            self._apply_layers(desired, stride)
        except Exception as exc:  # never let a display problem escape to Qt
            report_error("napari-invert: could not update the layers", exc)

    def _apply_layers(self, desired: list[LayerData], stride: int) -> None:
        layers = self._viewer.layers
        managed = {layer_key(lyr.metadata[META_KEY]): lyr for lyr in layers if META_KEY in lyr.metadata}
        for i, layer in enumerate(managed.values()):  # free the names first (napari keeps them unique)
            layer.name = f"napari-invert slot {i} {id(layer)}"
        ordered = []
        for data, kwargs, _ in desired:
            key = layer_key(kwargs["metadata"][META_KEY])
            layer = managed.pop(key, None)
            if layer is not None and layer.data.shape == data.shape and layer.ndim == data.ndim:
                layer.data = data
                layer.metadata = kwargs["metadata"]
                layer.contrast_limits_range = kwargs["contrast_limits"]
                layer.contrast_limits = kwargs["contrast_limits"]
                layer.scale = kwargs["scale"]
                layer.name = kwargs["name"]
            else:
                if layer is not None:
                    layers.remove(layer)
                layer = self._viewer.add_image(data, **kwargs)
            ordered.append(layer)
        for layer in managed.values():
            layers.remove(layer)
        for target, layer in enumerate(ordered):
            current = layers.index(layer)
            if current != target:
                layers.move(current, target)
        if not self._oriented and ordered and ordered[0].ndim == 3:
            # axial slices (z), x to the right, anterior (+y) up: the usual way to read a brain
            self._viewer.dims.order = (2, 1, 0)
            self._viewer.camera.orientation2d = ("up", "right")
            self._oriented = True
        n_cells = -(-len(ordered) // stride)
        shape = grid_shape(n_cells)
        grid = self._viewer.canvas.grid
        layout_changed = (grid.stride, tuple(grid.shape), grid.enabled) != (stride, shape, True)
        grid.stride = stride
        grid.shape = shape
        grid.enabled = True
        if layout_changed:
            self._viewer.reset_view()

    # -- metrics ----------------------------------------------------------------------------------------
    def _update_metrics(self) -> None:
        view = self._view
        if view is None:
            return
        rows: list[tuple[str, dict[str, MetricValue]]] = []
        if self._pair is not None:
            experiment, recon_subject, candidate, similarity = self._pair
            self.metrics_title.setText(f"Reconstruction of {recon_subject} vs original of {candidate}")
            rows.append((experiment.label, {k: MetricValue(v) for k, v in similarity.items()}))
        else:
            subject = view.ref_subject
            source = "evaluation/metrics.csv" if self._table is not None else "computed on demand"
            self.metrics_title.setText(f"{subject}: metrics from {source} (#n: re-identification rank)")
            for i, cell in enumerate(view.cells):
                if self._table is not None:
                    values = self._table.lookup(subject, cell.experiment)
                else:
                    values = {
                        k: MetricValue(v) for k, v in (view.scores[i] if i < len(view.scores) else {}).items()
                    }
                rows.append((cell.experiment.label, values))
        metrics = sort_metrics({m for _, values in rows for m in values})
        short = short_labels([label for label, _ in rows])
        table = self.metrics_table
        table.clear()
        table.setRowCount(len(metrics))
        table.setColumnCount(len(rows))
        table.setVerticalHeaderLabels(metrics)
        for c, ((label, values), name) in enumerate(zip(rows, short)):
            header = QTableWidgetItem(name)
            header.setToolTip(label)
            header.setData(Qt.UserRole, label)
            table.setHorizontalHeaderItem(c, header)
            for r, metric in enumerate(metrics):
                value = values.get(metric)
                table.setItem(r, c, QTableWidgetItem(value.text() if value is not None else "–"))
        height = table.horizontalHeader().height() + sum(table.rowHeight(r) for r in range(len(metrics)))
        table.setFixedHeight(height + 2 * table.frameWidth() + 2)

    def metrics_text(self) -> dict[str, dict[str, str]]:
        """The metrics table as ``{experiment label: {metric: text}}`` (for tests and scripts)."""
        table = self.metrics_table
        out: dict[str, dict[str, str]] = {}
        for c in range(table.columnCount()):
            label = table.horizontalHeaderItem(c).data(Qt.UserRole)
            out[label] = {
                table.verticalHeaderItem(r).text(): table.item(r, c).text() for r in range(table.rowCount())
            }
        return out


def short_labels(labels: Sequence[str]) -> list[str]:
    """Column titles: the architecture alone when that is unambiguous, else arch + tap."""
    archs = [label.split(" ")[0] for label in labels]
    without_variant = [label.rsplit(" (", 1)[0] for label in labels]
    if len(set(archs)) == len(archs):
        return archs
    return without_variant


def grid_shape(n_cells: int) -> tuple[int, int]:
    """Rows and columns of the grid: one row up to 4 cells, else a near-square layout."""
    if n_cells <= 4:
        return (1, max(1, n_cells))
    cols = math.ceil(math.sqrt(n_cells))
    return (math.ceil(n_cells / cols), cols)


@contextlib.contextmanager
def _blocked(widget: QWidget):  # type: ignore[no-untyped-def]
    """Block a widget's signals for the duration of a programmatic update."""
    old = widget.blockSignals(True)
    try:
        yield widget
    finally:
        widget.blockSignals(old)
