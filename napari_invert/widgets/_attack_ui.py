"""The Attack widget's controls: settings in a scroll area, Train/Cancel/progress always visible.

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
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_invert.config import AttackConfig
from napari_invert.widgets._qt_util import scrolled
from napari_invert.widgets._workers import guard, guard_slot

LOSSES = ("mse", "l1", "mse+ssim")
DEVICES = ("auto", "cpu", "cuda")
#: Smallest height of the dock: the settings scroll, Train/Cancel/progress stay visible.
MIN_HEIGHT = 340


def build_attack_ui(w: Any) -> None:
    """Create the Attack widget ``w``'s controls as attributes of ``w`` and lay them out."""
    w.source_label = QLabel("Open a study (or a cohort + segmenter) in the Study widget.")
    w.source_label.setWordWrap(True)
    w.variant_combo = QComboBox()
    w.fold_combo = QComboBox()
    w.arch_combo = QComboBox()
    w.tap_combo = QComboBox()
    for combo in (w.variant_combo, w.fold_combo):
        combo.currentIndexChanged.connect(guard(w._on_selection_changed, "selection"))
    w.arch_combo.currentIndexChanged.connect(guard(w._on_arch_changed, "selection"))
    w.tap_combo.currentIndexChanged.connect(guard(w._update_state, "selection"))
    w.segmenter_label = QLabel("")
    w.segmenter_label.setWordWrap(True)

    w.attack_list = QListWidget()
    w.attack_list.setSelectionMode(QAbstractItemView.NoSelection)
    w.attack_list.setMaximumHeight(120)
    w.attack_list.setToolTip("The attacker's own images: the fold's attack set (never a private subject)")

    w.steps = QSpinBox()
    w.steps.setRange(1, 1_000_000)
    w.batch_size = QSpinBox()
    w.batch_size.setRange(1, 64)
    w.lr = QDoubleSpinBox()
    w.lr.setDecimals(5)
    w.lr.setRange(1e-5, 1.0)
    w.lr.setSingleStep(1e-4)
    w.base_filters = QSpinBox()
    w.base_filters.setRange(1, 256)
    w.loss_combo = QComboBox()
    w.loss_combo.addItems(LOSSES)
    w.device_combo = QComboBox()
    w.device_combo.addItems(DEVICES)
    w.replace_box = QCheckBox("Replace an existing decoder")
    w.replace_box.toggled.connect(guard(w._update_state, "selection"))
    w.reconstruct_box = QCheckBox("Reconstruct the fold's private subjects afterwards")
    w.reconstruct_box.setChecked(True)
    w._set_training_defaults(AttackConfig())

    w.train_button = QPushButton("Train decoder")
    w.cancel_button = QPushButton("Cancel")
    w.train_button.clicked.connect(guard_slot(w.start_training, "training"))
    w.cancel_button.clicked.connect(guard_slot(w.cancel, "cancel"))
    w.decoder_file = FileEdit(mode="r", filter="*.safetensors *.json", label="Decoder")
    w.load_button = QPushButton("Load decoder + reconstruct")
    w.load_button.clicked.connect(guard_slot(w.load_decoder, "loading the decoder"))
    w.progress = QProgressBar()
    w.progress.setRange(0, 1)
    w.progress.setValue(0)
    w.progress.setFormat("%v / %m steps")
    w.status = QLabel("")
    w.status.setWordWrap(True)

    target = QFormLayout()
    target.addRow("Variant", w.variant_combo)
    target.addRow("Fold", w.fold_combo)
    target.addRow("Architecture", w.arch_combo)
    target.addRow("Tap (attacker reads)", w.tap_combo)
    target.addRow(w.segmenter_label)
    target_box = QGroupBox("Victim")
    target_box.setLayout(target)

    train = QFormLayout()
    train.addRow("Attack set", w.attack_list)
    train.addRow("Steps", w.steps)
    train.addRow("Batch size", w.batch_size)
    train.addRow("Learning rate", w.lr)
    train.addRow("Decoder base filters", w.base_filters)
    train.addRow("Loss", w.loss_combo)
    train.addRow("Device", w.device_combo)
    train.addRow(w.replace_box)
    train.addRow(w.reconstruct_box)
    train_box = QGroupBox("Inversion decoder training")
    train_box.setLayout(train)

    buttons = QHBoxLayout()
    buttons.addWidget(w.train_button)
    buttons.addWidget(w.cancel_button)
    load_box = QGroupBox("…or load a trained decoder")
    load_layout = QVBoxLayout(load_box)
    load_layout.addWidget(w.decoder_file.native)
    load_layout.addWidget(w.load_button)

    # the settings scroll; Train, Cancel, the progress bar and the status stay visible below
    page = scrolled(w)
    layout = QVBoxLayout(page)
    layout.addWidget(w.source_label)
    layout.addWidget(target_box)
    layout.addWidget(train_box)
    layout.addWidget(load_box)
    layout.addStretch(1)
    footer = QWidget()
    footer_layout = QVBoxLayout(footer)
    footer_layout.setContentsMargins(6, 2, 6, 6)
    footer_layout.addLayout(buttons)
    footer_layout.addWidget(w.progress)
    footer_layout.addWidget(w.status)
    w.layout().addWidget(footer)
    w.setMinimumHeight(MIN_HEIGHT)
