"""Similarity-matrix dock: heat map of reconstruction ``i`` (rows) vs original ``j`` (columns).

Reads the stored matrix when the study was evaluated, otherwise computes the matrix via
the core in a thread worker (always for reconstructions made by a plugin-trained decoder:
the stored matrices describe the study's own). Clicking cell ``(i, j)`` asks, through the
viewer's :class:`~napari_invert.widgets._state.SessionState`, to show reconstruction ``i``
next to candidate original ``j``; the diagonal is the true match. This dock never imports
the Compare widget: it follows the subject and variant that Compare announces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QVBoxLayout, QWidget

from napari_invert.study.results import Experiment, StudyResults
from napari_invert.widgets._core_api import CoreUnavailable, ranks_of_truth, study_similarity_matrix
from napari_invert.widgets._plugin_results import all_experiments, is_plugin
from napari_invert.widgets._state import PairRequest, session_for
from napari_invert.widgets._study_data import (
    HIGHER_IS_BETTER,
    SimilarityMatrix,
    load_similarity,
    similarity_path,
    sort_metrics,
    stored_similarity_metrics,
)
from napari_invert.widgets._workers import describe_error, guard, start_worker

#: Above this many subjects the tick labels get smaller (every subject stays labelled).
SMALL_LABELS_FROM = 16

#: Metrics the GUI can compute on demand when no matrix is stored.
COMPUTABLE_METRICS: tuple[str, ...] = ("correlation", "ssim", "ssim_global")


def load_or_compute_matrix(
    results: StudyResults, experiment: Experiment, metric: str
) -> tuple[SimilarityMatrix, np.ndarray | None]:
    """Worker function: ``(matrix with its ids, rank of each row's true original or None)``."""
    path = None if is_plugin(experiment) else similarity_path(results.folder, experiment, metric)
    if path is not None:
        matrix = load_similarity(path, results.subject_ids, metric)
    else:
        matrix = study_similarity_matrix(results, experiment, metric)
    try:
        ranks = ranks_of_truth(matrix, HIGHER_IS_BETTER.get(metric, True))
    except CoreUnavailable:
        ranks = None
    return matrix, ranks


class SimilarityMatrixWidget(QWidget):
    """Heat map of one experiment's similarity matrix; click a cell to compare the pair."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._session = session_for(getattr(viewer, "__wrapped__", viewer))
        self._study: StudyResults | None = None
        self._similarity: SimilarityMatrix | None = None
        self._ranks: np.ndarray | None = None
        self._experiment: Experiment | None = None
        self._request = 0
        self._workers: set[Any] = set()
        self._marker: Rectangle | None = None
        self._row_marker: Rectangle | None = None

        self.experiment_combo = QComboBox()
        self.metric_combo = QComboBox()
        self.experiment_combo.currentIndexChanged.connect(guard(self._on_experiment_changed, "matrix"))
        self.metric_combo.currentTextChanged.connect(guard(lambda _t: self.reload(), "matrix"))
        self.figure = Figure(figsize=(5, 5), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumSize(300, 300)
        self.axes = self.figure.add_subplot(111)
        self.canvas.mpl_connect("button_press_event", self._on_press)
        self.status = QLabel("Click a cell (i, j): reconstruction i next to original j.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Reconstructions", self.experiment_combo)
        form.addRow("Metric", self.metric_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.canvas, stretch=1)
        layout.addWidget(self.status)
        self.setMinimumHeight(320)

        self._session.study_changed.connect(self._on_study_changed)
        self._session.variant_shown.connect(self._on_variant_shown)
        self._session.subject_shown.connect(self.highlight_subject)
        if self._session.study is not None:
            self.set_study(self._session.study, self._session.variant or self._session.study.variants[0])

    # -- public API --------------------------------------------------------------------
    @property
    def similarity(self) -> SimilarityMatrix | None:
        """The matrix shown (with its row and column subject ids)."""
        return self._similarity

    @property
    def busy(self) -> bool:
        return bool(self._workers)

    def set_study(self, study: StudyResults, variant: str) -> None:
        """Show the experiments of ``variant`` (the Compare widget's current variant)."""
        self._study = study
        experiments = [e for e in all_experiments(study) if e.variant == variant]
        old = self.experiment_combo.blockSignals(True)
        self.experiment_combo.clear()
        for exp in experiments:
            self.experiment_combo.addItem(exp.label, exp)
        self.experiment_combo.blockSignals(old)
        self._fill_metrics()
        self.reload()

    def reload(self) -> None:
        """Load (or compute) the matrix of the selected experiment and metric."""
        study = self._study
        experiment = self.experiment_combo.currentData()
        metric = self.metric_combo.currentText()
        if study is None or experiment is None or not metric:
            return
        self._request += 1
        token = self._request
        self.status.setText(f"Loading the {metric} matrix of {experiment.label}…")
        holder: dict[str, Any] = {}

        def returned(result: tuple[SimilarityMatrix, np.ndarray | None]) -> None:
            if token == self._request:
                self._show(experiment, *result)

        def errored(exc: BaseException) -> None:
            if token == self._request:
                self.status.setText(f"No matrix: {describe_error(exc)}")

        worker = start_worker(
            load_or_compute_matrix,
            study,
            experiment,
            metric,
            on_returned=returned,
            on_errored=errored,
            on_finished=lambda: self._workers.discard(holder.get("worker")),
            context="napari-invert: no similarity matrix",
        )
        holder["worker"] = worker
        self._workers.add(worker)

    def select_cell(self, i: int, j: int) -> None:
        """Show reconstruction of row ``i`` next to the original of column ``j``."""
        sim, experiment = self._similarity, self._experiment
        if sim is None or experiment is None:
            return
        if not (0 <= i < len(sim.rows) and 0 <= j < len(sim.columns)):
            return
        recon_id, candidate = sim.rows[i], sim.columns[j]
        metric = sim.metric
        values = {f"{metric} vs {candidate}": float(sim.matrix[i, j])}
        true_col = sim.true_column(i)
        if true_col is not None and true_col != j:
            values[f"{metric} vs true {recon_id}"] = float(sim.matrix[i, true_col])
        if self._ranks is not None:
            values["rank of true"] = float(self._ranks[i])
        self._mark(i, j)
        self.status.setText(
            f"Reconstruction of {recon_id} vs original of {candidate}: {metric} = {sim.matrix[i, j]:.3f}"
            + (" (true match)" if recon_id == candidate else "")
        )
        self._session.request_pair(PairRequest(experiment, recon_id, candidate, values))

    def cell_center(self, i: int, j: int) -> tuple[float, float]:
        """Canvas pixel position (matplotlib display coordinates) of cell ``(i, j)``."""
        x, y = self.axes.transData.transform((j, i))
        return float(x), float(y)

    def highlight_subject(self, subject_id: str | None) -> None:
        """Outline the row of the subject shown in the Compare widget."""
        sim = self._similarity
        if self._row_marker is not None:
            self._row_marker.remove()
            self._row_marker = None
        if sim is not None and subject_id in sim.rows:
            row = sim.rows.index(subject_id)
            self._row_marker = self.axes.add_patch(
                Rectangle(
                    (-0.5, row - 0.5),
                    len(sim.columns),
                    1,
                    fill=False,
                    edgecolor="white",
                    linewidth=1.2,
                    linestyle="--",
                )
            )
        self.canvas.draw_idle()

    # -- internals -----------------------------------------------------------------------
    def _on_study_changed(self, study: StudyResults | None) -> None:
        if study is not None:
            self.set_study(study, study.variants[0])

    def _on_variant_shown(self, variant: str) -> None:
        if self._study is not None and variant:
            self.set_study(self._study, variant)

    def _fill_metrics(self) -> None:
        experiment = self.experiment_combo.currentData()
        stored = (
            []
            if self._study is None or experiment is None or is_plugin(experiment)
            else stored_similarity_metrics(self._study.folder, experiment)
        )
        metrics = sort_metrics(set(stored) | set(COMPUTABLE_METRICS))
        current = self.metric_combo.currentText()
        old = self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        for metric in metrics:
            self.metric_combo.addItem(metric)
            tip = "stored by napari-invert evaluate" if metric in stored else "computed on demand"
            self.metric_combo.setItemData(self.metric_combo.count() - 1, tip, Qt.ToolTipRole)
        preferred = current if current in metrics else (stored[0] if stored else "correlation")
        self.metric_combo.setCurrentText(preferred)
        self.metric_combo.blockSignals(old)

    def _on_experiment_changed(self, _index: int) -> None:
        self._fill_metrics()
        self.reload()

    def _show(self, experiment: Experiment, sim: SimilarityMatrix, ranks: np.ndarray | None) -> None:
        self._similarity, self._experiment, self._ranks = sim, experiment, ranks
        self.figure.clear()
        self.axes = self.figure.add_subplot(111)
        self._marker = self._row_marker = None
        cmap = "viridis" if HIGHER_IS_BETTER.get(sim.metric, True) else "viridis_r"
        image = self.axes.imshow(sim.matrix, cmap=cmap, interpolation="nearest", aspect="auto")
        self.figure.colorbar(image, ax=self.axes, fraction=0.046, pad=0.04, label=sim.metric)
        n = max(len(sim.rows), len(sim.columns))
        size = 7 if n <= SMALL_LABELS_FROM else max(3.5, 7 * SMALL_LABELS_FROM / n)
        self.axes.set_xticks(range(len(sim.columns)), sim.columns, rotation=90, fontsize=size)
        self.axes.set_yticks(range(len(sim.rows)), sim.rows, fontsize=size)
        self.axes.set_xlabel("candidate original j")
        self.axes.set_ylabel("reconstruction i")
        self.axes.set_title(f"{experiment.label}\n{sim.metric} ({sim.source})", fontsize=8)
        self.highlight_subject(self._session.subject)
        self.canvas.draw()
        rank_text = ""
        if ranks is not None:
            rank_text = f"; re-identified (rank 1): {int(np.sum(ranks == 1))}/{len(ranks)}"
        origin = "stored" if sim.source.endswith(".npy") else sim.source
        self.status.setText(f"{sim.metric} matrix ({origin}){rank_text}. Click a cell to compare.")

    def _mark(self, i: int, j: int) -> None:
        if self._marker is not None:
            self._marker.remove()
        self._marker = self.axes.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2)
        )
        self.canvas.draw_idle()

    def _on_press(self, event: Any) -> None:
        try:
            if event.inaxes is not self.axes or event.xdata is None or event.ydata is None:
                return
            self.select_cell(round(event.ydata), round(event.xdata))
        except Exception as exc:  # never raise into Qt from a matplotlib callback
            self.status.setText(f"Could not select the cell: {describe_error(exc)}")
