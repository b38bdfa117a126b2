"""The Study widget's box for the user's own segmenter: an audit config YAML (``model:``).

"Discover taps" builds the model adapter in a thread worker
(:func:`~napari_invert.widgets._audit_source.load_audit_model`), then lists the discovered
roles and layers in a chooser and the default attack set (cohort subjects not in
``trained_on``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import FileEdit
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QComboBox, QGroupBox, QLabel, QPushButton, QVBoxLayout

from napari_invert.widgets._audit_source import FILE_KINDS, FOLDER_KINDS, AuditModel, load_audit_model
from napari_invert.widgets._workers import describe_error, guard_slot, start_worker

AUDIT_YAML = "audit config / model YAML"


class AuditModelBox(QGroupBox):
    """Audit config YAML -> model adapter, tap chooser and default attack subjects."""

    def __init__(
        self, cohort_dir: Callable[[], Any], publish: Callable[[AuditModel | None, str | None], None]
    ) -> None:
        super().__init__("…or your own segmenter (audit config with a 'model:' block)")
        self._cohort_dir = cohort_dir
        self._publish = publish
        self.model: AuditModel | None = None
        self._worker: Any = None
        self.source_kind = QComboBox()
        self.source_kind.addItem(AUDIT_YAML, None)
        for text, kind in FILE_KINDS.items():
            self.source_kind.addItem(text, kind)
        self.source_kind.currentIndexChanged.connect(guard_slot(self._on_kind_chosen, "choosing the source"))
        self.config_file = FileEdit(mode="r", label="Audit config")
        self.discover_button = QPushButton("Discover taps")
        self.discover_button.clicked.connect(guard_slot(self.discover, "discovering the taps"))
        self.tap_choice = QComboBox()
        self.tap_choice.setEnabled(False)
        self.tap_choice.currentIndexChanged.connect(guard_slot(self._on_tap_chosen, "choosing the tap"))
        self.info = QLabel("Choose an audit config (or a model file with 'kind:').")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.source_kind)
        layout.addWidget(self.config_file.native)
        layout.addWidget(self.discover_button)
        layout.addWidget(QLabel("Tap (role or layer)"))
        layout.addWidget(self.tap_choice)
        layout.addWidget(self.info)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    @property
    def tap(self) -> str | None:
        """The chosen tap entry (a role such as ``bottleneck+skips`` or a layer name)."""
        data = self.tap_choice.currentData()
        return str(data) if data is not None else None

    def discover(self) -> None:
        """Load the model of the chosen YAML in a worker; the chooser fills when it returns."""
        text = str(self.config_file.value or "").strip()
        if text in ("", "."):
            self.info.setText("Choose an audit config YAML first.")
            return
        if self._worker is not None:
            return
        self.discover_button.setEnabled(False)
        self.info.setText("Loading the model and discovering its taps…")
        cohort = self._cohort_dir()
        cohort_text = str(cohort or "").strip()
        self._worker = start_worker(
            load_audit_model,
            text,
            None if cohort_text in ("", ".") else cohort_text,
            self.source_kind.currentData(),
            on_returned=self._on_loaded,
            on_errored=self._on_failed,
            on_finished=self._on_finished,
            context="napari-invert: loading the audit model failed",
        )

    # -- worker callbacks (main thread) -----------------------------------------------------
    def _on_loaded(self, model: AuditModel) -> None:
        try:
            self.model = model
            self.tap_choice.clear()
            for entry, description in model.choices:
                self.tap_choice.addItem(f"{entry} — {description}", entry)
            self.tap_choice.setEnabled(bool(model.choices))
            trained = "unknown" if model.trained_on is None else f"{len(model.trained_on)} subjects"
            attack = ", ".join(model.attack) if model.attack is not None else "not resolved"
            self.info.setText(
                f"{model.source.name}: {len(model.discovery.layers)} layers, roles "
                f"{', '.join(sorted(model.discovery.roles))}. Trained on: {trained}. "
                f"Attack set ({model.attack_note}): {attack}"
            )
            self._publish(model, self.tap)
            show_info(f"napari-invert: {model.source.name}: taps discovered")
        except Exception as exc:
            self.info.setText(f"Could not show the taps: {describe_error(exc)}")

    def _on_kind_chosen(self) -> None:
        """A bundle or nnU-Net source is a folder; a YAML or TorchScript source is a file."""
        self.config_file.mode = "d" if self.source_kind.currentData() in FOLDER_KINDS else "r"

    def _on_tap_chosen(self) -> None:
        if self.model is not None:
            self._publish(self.model, self.tap)

    def _on_failed(self, exc: BaseException) -> None:
        self.model = None
        self.tap_choice.clear()
        self.tap_choice.setEnabled(False)
        self._publish(None, None)
        self.info.setText(f"Could not load the model: {describe_error(exc)}")

    def _on_finished(self) -> None:
        self._worker = None
        self.discover_button.setEnabled(True)
