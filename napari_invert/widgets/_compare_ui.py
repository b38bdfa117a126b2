"""The Compare widget's controls: built here, laid out in a scroll area, wired to its slots.

Every slot is wrapped (:func:`guard_slot` / :func:`guard`) so an exception is shown in the
viewer and never reaches Qt.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import FileEdit
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
    QProgressBar,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
)

from napari_invert.widgets._layers import OVERLAY_KINDS, OVERLAY_TITLES
from napari_invert.widgets._qt_util import scrolled
from napari_invert.widgets._workers import guard, guard_slot

NEXT_KEY = "PageDown"
PREVIOUS_KEY = "PageUp"


def build_compare_ui(w: Any) -> None:
    """Create the Compare widget ``w``'s controls as attributes of ``w`` and lay them out."""
    w.study_dir = FileEdit(mode="d", label="Study")
    w.study_dir.line_edit.native.setMinimumWidth(60)
    w.open_button = QPushButton("Open")
    w.open_button.clicked.connect(guard_slot(lambda: w.open(w.study_dir.value), "open"))
    w.study_label = QLabel("No study opened.")
    w.study_label.setWordWrap(True)
    row = QHBoxLayout()
    row.addWidget(w.study_label, stretch=1)
    row.addWidget(w.open_button)
    w.variant_combo = QComboBox()
    w.variant_combo.currentTextChanged.connect(guard(w._on_variant_changed, "variant"))
    w.experiment_list = QListWidget()
    w.experiment_list.setMaximumHeight(80)
    w.experiment_list.itemChanged.connect(guard(w._on_experiments_changed, "selection"))

    w.subject_list = QListWidget()
    w.subject_list.setSelectionMode(QAbstractItemView.SingleSelection)
    w.subject_list.currentRowChanged.connect(guard(w._on_subject_row_changed, "navigation"))
    w.previous_button = QPushButton(f"◀ Previous ({PREVIOUS_KEY})")
    w.next_button = QPushButton(f"Next ({NEXT_KEY}) ▶")
    w.previous_button.clicked.connect(guard_slot(w.previous_subject, "navigation"))
    w.next_button.clicked.connect(guard_slot(w.next_subject, "navigation"))
    nav = QHBoxLayout()
    nav.addWidget(w.previous_button)
    nav.addWidget(w.next_button)

    w.overlay_boxes: dict[str, QCheckBox] = {}
    overlay_box = QGroupBox("Overlays (on each reconstruction)")
    overlay_layout = QVBoxLayout(overlay_box)
    for kind in OVERLAY_KINDS:
        box = QCheckBox(OVERLAY_TITLES[kind])
        box.toggled.connect(guard(w._on_overlay_toggled, "overlay"))
        w.overlay_boxes[kind] = box
        overlay_layout.addWidget(box)
    w.deformation_note = QLabel("")
    w.deformation_note.setWordWrap(True)
    overlay_layout.addWidget(w.deformation_note)
    w.overlay_progress = QProgressBar()
    w.overlay_progress.setRange(0, 1)
    w.overlay_progress.setFormat("%v / %m maps")
    w.overlay_cancel = QPushButton("Cancel")
    w.overlay_cancel.setToolTip("Stop computing overlay maps (a running registration finishes first)")
    w.overlay_cancel.clicked.connect(guard_slot(w.cancel_overlays, "cancel"))
    w.overlay_cancel.setEnabled(False)
    progress_row = QHBoxLayout()
    progress_row.addWidget(w.overlay_progress, stretch=1)
    progress_row.addWidget(w.overlay_cancel)
    overlay_layout.addLayout(progress_row)
    w.scale_label = QLabel("")
    w.scale_label.setWordWrap(True)
    w.scale_label.setToolTip("One colour scale per subject and overlay, shared by every grid cell")
    overlay_layout.addWidget(w.scale_label)

    w.metrics_table = QTableWidget(0, 0)
    w.metrics_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    w.metrics_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    w.metrics_title = QLabel("Metrics")
    w.metrics_title.setWordWrap(True)
    w.matrix_button = QPushButton("Similarity matrix…")
    w.matrix_button.clicked.connect(guard_slot(w.show_matrix, "similarity matrix"))
    w.status = QLabel("")
    w.status.setWordWrap(True)

    form = QFormLayout()
    form.addRow("Variant", w.variant_combo)
    form.addRow("Reconstructions", w.experiment_list)

    layout = QVBoxLayout(scrolled(w))
    w.setMinimumHeight(460)  # the essentials stay visible beside other docks
    layout.addWidget(w.study_dir.native)
    layout.addLayout(row)
    layout.addLayout(form)
    layout.addWidget(QLabel("Subjects"))
    w.subject_list.setMinimumHeight(60)
    w.subject_list.setMaximumHeight(110)
    layout.addWidget(w.subject_list)
    layout.addLayout(nav)
    layout.addWidget(overlay_box)
    layout.addWidget(w.metrics_title)
    layout.addWidget(w.metrics_table)
    layout.addWidget(w.matrix_button)
    layout.addWidget(w.status)
    layout.addStretch(1)
