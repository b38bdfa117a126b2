"""Compare widget: a subject's original next to its reconstructions, with overlays.

Layout in the viewer (grid mode, one cell per reconstruction, the original last)::

    [recon, exp 1 (+ overlays)] [recon, exp 2 (+ overlays)] ... [original]

Every cell is titled with what it shows (original / architecture + tap / candidate); each
overlay kind uses one colour scale per subject across the grid, with a colour bar in each
cell and its range written under the overlay boxes. All layers share the viewer's dims, so
slicing (and the 3D view) stays linked across the grid.

Work is off the main thread: reading a subject and making overlay maps run in thread
workers (ANTs registrations in a separate process), with a progress bar and a Cancel
button; layers are updated in place. The widgets talk only through the viewer's
:class:`~napari_invert.widgets._state.SessionState` (a click in the similarity matrix
arrives as a :class:`~napari_invert.widgets._state.PairRequest`).

Modules: :mod:`._overlays` (maps, cache, scales), :mod:`._compare_overlays` (overlay
controls: progress, Cancel, failures), :mod:`._grid` (layers in the grid), :mod:`._scores`
(metrics table), :mod:`._recon_list` (the list of reconstructions and its labels),
:mod:`._compare_ui` (controls), this one (navigation, loading, layers).
Keyboard (bound on the viewer): ``PageDown`` next subject, ``PageUp`` previous subject.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QListWidgetItem, QWidget

from napari_invert.config import StudyConfig
from napari_invert.errors import NapariInvertError
from napari_invert.study.results import Experiment, StudyResults
from napari_invert.widgets._compare_overlays import OverlayControls
from napari_invert.widgets._compare_ui import NEXT_KEY, PREVIOUS_KEY, build_compare_ui
from napari_invert.widgets._core_api import Cell, SubjectView, load_view
from napari_invert.widgets._grid import apply_layers, grid_layers, managed_layers, set_grid
from napari_invert.widgets._launch import dock_similarity_matrix
from napari_invert.widgets._layers import OVERLAY_TITLES, LayerData
from napari_invert.widgets._overlays import MapCache, OverlayKey, scale_text
from napari_invert.widgets._plugin_results import all_experiments
from napari_invert.widgets._qt_util import blocked, unwrap_viewer
from napari_invert.widgets._recon_list import fill_recon_list, ticked_experiments
from napari_invert.widgets._scores import (
    fill_table,
    needs_scores,
    pair_column,
    pair_title,
    subject_columns,
    table_text,
    title_for,
)
from napari_invert.widgets._state import PairRequest, open_study, session_for
from napari_invert.widgets._study_data import MetricsTable, folds_of, read_metrics
from napari_invert.widgets._workers import CancelToken, ProgressRelay, describe_error, start_worker

if TYPE_CHECKING:
    import napari


class CompareWidget(OverlayControls, QWidget):
    """Browse subjects; compare originals and reconstructions side by side."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = unwrap_viewer(viewer)
        self._session = session_for(self._viewer)
        self._session.compare_docked = True
        self.destroyed.connect(lambda *_a, s=self._session: setattr(s, "compare_docked", False))
        self._study: StudyResults | None = None
        self._config: StudyConfig | None = None
        self._table: MetricsTable | None = None
        self._view: SubjectView | None = None
        self._pair: PairRequest | None = None
        self._request = 0
        self._cache = MapCache()
        self._pending: set[OverlayKey] = set()
        self._failed_kinds: dict[str, str] = {}
        self._data_ranges: dict[str, float] = {}
        self._oriented = False
        self._workers: set[Any] = set()
        self._overlay_token: CancelToken | None = None
        self._relay = ProgressRelay(self._on_overlay_progress)
        self._matrix: Any = None  # the similarity-matrix dock's widget, once opened
        self._deformation_reason = ""
        self.scales: dict[str, tuple[float, float]] = {}
        self._build_ui()
        self._bind_keys()
        self._session.study_changed.connect(self._on_study_changed)
        self._session.pair_requested.connect(self._on_pair_requested)
        self._session.plugin_results_changed.connect(self._on_plugin_results)
        if self._session.study is not None:
            self._on_study_changed(self._session.study)

    # -- UI --------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        build_compare_ui(self)
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
        return ticked_experiments(self.experiment_list)

    def open(self, path: str | Path) -> StudyResults | None:
        """Open a study folder and publish it to the viewer's other widgets.

        A problem is written in this widget's status line (the caller decides whether to
        also notify, so one failure is reported once).
        """
        try:
            results, config = open_study(path)
        except Exception as exc:
            self.status.setText(f"Could not open: {describe_error(exc)}")
            from napari.utils.notifications import show_error

            show_error(f"napari-invert: cannot open study: {describe_error(exc)}")
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
            self._session.show_subject(self.current_subject)

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
        """Show reconstruction of ``recon_subject`` next to candidate original ``candidate``."""
        self._on_pair_requested(PairRequest(experiment, recon_subject, candidate, dict(similarity or {})))

    def show_matrix(self) -> Any:
        """Open (or raise) the similarity-matrix dock, tabbed with this widget.

        The dock is made by :func:`~napari_invert.widgets._launch.dock_similarity_matrix`;
        it and this widget talk only through the viewer's session (pair requests, the
        subject and variant shown).
        """
        if self._study is None:
            return None
        if self._matrix is None:
            self._matrix, problem = dock_similarity_matrix(self._viewer)
            if problem:
                self.status.setText(problem)
        return self._matrix

    def metrics_text(self) -> dict[str, dict[str, str]]:
        """The metrics table as ``{experiment label: {metric: text}}`` (for tests and scripts)."""
        return table_text(self.metrics_table)

    # -- study / selection changes --------------------------------------------------------------
    def _on_study_changed(self, study: StudyResults | None) -> None:
        self.cancel_overlays()
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
        self._update_deformation_reason()
        done = {v: study.reconstructed_subjects(v) for v in study.variants}  # one scan of the folder
        self._fill_subjects(study, set().union(*done.values()))
        with blocked(self.variant_combo):
            self.variant_combo.clear()
            self.variant_combo.addItems(study.variants)
        self._session.show_variant(self.variant_combo.currentText())
        self._fill_experiments()
        self._set_enabled(True)
        # a partial study (some folds not run yet): open on a subject that has reconstructions
        shown = done.get(self.variant_combo.currentText(), set())
        self.set_subject(next((i for i, s in enumerate(study.subject_ids) if s in shown), 0))

    def _fill_subjects(self, study: StudyResults, done: set[str]) -> None:
        """List every subject; ``done``: those with reconstructions (the others are marked)."""
        fold_of = {s: f.fold for f in folds_of(study) for s in f.private}
        with blocked(self.subject_list):
            self.subject_list.clear()
            for sid in study.subject_ids:
                later = "" if sid in done else "; not reconstructed yet"
                self.subject_list.addItem(
                    QListWidgetItem(f"{sid}  (private in fold {fold_of.get(sid, '–')}{later})")
                )

    def _fill_experiments(self, tick: Experiment | None = None) -> None:
        variant = self.variant_combo.currentText()
        experiments = (
            [] if self._study is None else [e for e in all_experiments(self._study) if e.variant == variant]
        )
        fill_recon_list(self.experiment_list, experiments, self.selected_experiments(), tick)
        if not experiments and self._study is not None:
            self.status.setText(f"No reconstructions for variant '{variant}' yet: showing originals only.")

    def _on_variant_changed(self, _text: str) -> None:
        self._fill_experiments()
        self._session.show_variant(self.variant_combo.currentText())
        self._pair = None
        self._reload()

    def _on_experiments_changed(self, _item: QListWidgetItem) -> None:
        self._pair = None
        self._reload()

    def _on_subject_row_changed(self, row: int) -> None:
        if row >= 0 and self._pair is None:
            self._reload()
        if row >= 0:
            self._session.show_subject(self.current_subject)

    def _on_overlay_toggled(self, _on: bool) -> None:
        self._ensure_overlays()
        self._sync_layers()

    def _on_pair_requested(self, request: PairRequest) -> None:
        """A pair from the similarity matrix: list row, status and Next follow it."""
        study = self._study
        if study is None or request.recon_subject not in study.subject_ids:
            return
        self._pair = request
        row = study.subject_ids.index(request.recon_subject)
        with blocked(self.subject_list):
            self.subject_list.setCurrentRow(row)
        match = "true match" if request.recon_subject == request.candidate else "candidate"
        self.status.setText(
            f"Reconstruction of {request.recon_subject} ({request.experiment.label}) next to the "
            f"original of {request.candidate} ({match}); Next/Previous continue from {request.recon_subject}."
        )
        self._session.show_subject(request.recon_subject)
        self._reload()

    def _on_plugin_results(self, experiment: Experiment) -> None:
        """New reconstructions from a decoder trained in the plugin: list them, tick them."""
        if self._study is None:
            return
        self._fill_experiments(tick=experiment)
        self._pair = None
        self._reload()

    # -- loading ---------------------------------------------------------------------------------
    def _cells(self) -> tuple[str, list[Cell]] | None:
        if self._study is None:
            return None
        if self._pair is not None:
            p = self._pair
            return p.candidate, [Cell(p.experiment, p.recon_subject, p.candidate)]
        subject = self.current_subject
        if subject is None:
            return None
        return subject, [Cell(e, subject, subject) for e in self.selected_experiments()]

    def _reload(self) -> None:
        cells = self._cells()
        if cells is None or self._study is None:
            return
        ref_subject, cell_list = cells
        if self._overlay_token is not None:  # maps of the previous subject are no longer wanted
            self._overlay_token.cancel()
        self._request += 1
        token = self._request
        variant = cell_list[0].experiment.variant if cell_list else self.variant_combo.currentText()
        self.status.setText(f"Loading {ref_subject}…" if self._pair is None else self.status.text())
        self._start(
            load_view,
            self._study,
            variant,
            ref_subject,
            cell_list,
            needs_scores(cell_list, self._table) if self._pair is None else False,
            self._data_ranges.get(variant),
            on_returned=lambda view: self._on_view_loaded(token, view),
            what=f"load {ref_subject}",
        )

    def _start(
        self,
        func: Any,
        *args: Any,
        on_returned: Any,
        what: str,
        on_errored: Any | None = None,
        on_finished: Any | None = None,
        **kw: Any,
    ) -> None:
        holder: dict[str, Any] = {}

        def finished() -> None:
            self._workers.discard(holder.get("worker"))
            if on_finished is not None:
                on_finished()

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
            **kw,
        )
        holder["worker"] = worker
        self._workers.add(worker)

    def _on_view_loaded(self, token: int, view: SubjectView) -> None:
        if token != self._request:
            return  # a newer request superseded this one
        self._view = view
        self._data_ranges[view.variant] = view.data_range
        if self._pair is None:
            self.status.setText("; ".join(view.problems))
        if view.problems:
            show_warning("napari-invert: " + "; ".join(view.problems))
        self._sync_layers()
        self._update_metrics()
        self._ensure_overlays()

    # -- layers ----------------------------------------------------------------------------------------
    def _desired_layers(self) -> tuple[list[LayerData], int]:
        view, study = self._view, self._study
        assert view is not None and study is not None
        note = "original"
        if self._pair is not None:
            p = self._pair
            same = p.recon_subject == p.candidate
            note = "true original" if same else f"candidate for {p.recon_subject}"
        layers, stride, self.scales = grid_layers(
            view, study.spacing, self.active_overlays(), self._cache, managed_layers(self._viewer), note
        )
        self.scale_label.setText(
            "\n".join(
                f"Colour scale, {scale_text(k, lim, OVERLAY_TITLES[k])} (all cells)"
                for k, lim in self.scales.items()
            )
        )
        return layers, stride

    def _sync_layers(self) -> None:
        """Make the viewer's managed layers match the current view, in grid order."""
        if self._view is None or self._study is None:
            return
        try:
            desired, stride = self._desired_layers()
            ordered = apply_layers(self._viewer, desired)
            if not self._oriented and ordered and ordered[0].ndim == 3:
                # axial slices (z), x to the right, anterior (+y) up: the usual way to read a brain
                self._viewer.dims.order = (2, 1, 0)
                self._viewer.camera.orientation2d = ("up", "right")
                self._oriented = True
            if set_grid(self._viewer, len(ordered), stride):
                self._viewer.reset_view()
        except Exception as exc:  # never let a display problem escape to Qt
            from napari_invert.widgets._workers import report_error

            report_error("napari-invert: could not update the layers", exc)

    # -- metrics ----------------------------------------------------------------------------------------
    def _update_metrics(self) -> None:
        view = self._view
        if view is None:
            return
        if self._pair is not None:
            p = self._pair
            self.metrics_title.setText(pair_title(p.recon_subject, p.candidate))
            columns = [pair_column(p.experiment, p.values)]
        else:
            columns = subject_columns(view, self._table)
            self.metrics_title.setText(title_for(view.ref_subject, columns))
        fill_table(self.metrics_table, columns)
