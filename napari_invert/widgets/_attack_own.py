"""The Attack dock's "your own segmenter" mode (threat model: feature inversion).

When the Study dock publishes the user's own model (``SessionState.audit_model_changed``:
an :class:`~napari_invert.widgets._audit_source.AuditModel` with its adapter, discovered
taps and subjects), the Attack dock switches to it: the tap chooser lists the discovered
roles and layers, the attack list the cohort's subjects (those in ``trained_on`` unticked
and marked), and Train / Load run :func:`napari_invert.audit.decoder.train_own_decoder` /
:func:`~napari_invert.audit.decoder.reconstruct_own` in a thread worker. The cohort and
preprocessing come from the audit config (else the Study dock's cohort folder with the
default preprocessing). Results are shown as original | reconstruction pairs in napari's
grid.

This module only wires the Qt controls of the :class:`AttackWidget` (passed in) to the core;
the worker plumbing, checks and result display it shares with the study mode are
:mod:`._attack_common`. It imports no other widget.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_info
from qtpy.QtCore import Qt

from napari_invert.errors import NapariInvertError
from napari_invert.widgets._attack_common import (
    check_attack_set,
    chosen_decoder,
    fill_combo,
    fill_subject_list,
    loss_text,
    refuse,
    report_cancelled,
    show_pairs,
)
from napari_invert.widgets._qt_util import blocked

if TYPE_CHECKING:
    from napari_invert.attack.job import DecoderRun

ARCH_LABEL = "user (your segmenter)"


class OwnModelAttack:
    """The Attack widget's own-segmenter mode; ``active`` while a user's model is loaded."""

    def __init__(self, widget: Any) -> None:
        self.w = widget
        self.model: Any = None  # AuditModel
        self.data: Any = None  # napari_invert.audit.decoder.OwnModelCohort
        self.ids: list[str] = []
        self.trained_on: list[str] = []
        self.holdout: list[str] = []
        self.attack_default: list[str] | None = None
        self.note = ""

    @property
    def active(self) -> bool:
        return self.model is not None

    # -- switching in and out ------------------------------------------------------------------
    def activate(self, model: Any, tap: str | None) -> None:
        """Show ``model`` (an AuditModel) in the dock; ``tap``: the Study dock's chosen entry."""
        from napari_invert.audit.decoder import OwnModelCohort

        w = self.w
        self.model = model
        self.data, self.note = None, ""
        self.ids, self.trained_on, self.holdout, self.attack_default = [], [], [], None
        try:
            if model.config is not None:
                self.data = OwnModelCohort.from_audit_config(model.config)
            elif model.cohort_dir is not None:
                self.data = OwnModelCohort.from_folder(model.cohort_dir)
            else:
                self.note = f"choose a cohort folder in the Study dock ({model.config_note})"
            if self.data is not None:
                self.ids = self.data.subject_ids()
                self._roles()
        except NapariInvertError as exc:
            self.data, self.note = None, f"cohort not usable: {exc}"
        w.source_label.setText(
            f"Your segmenter: {model.source.name} ({model.adapter.description.get('kind', 'model')}), "
            + (f"cohort {self.data.cohort.path}" if self.data is not None else self.note)
        )
        fill_combo(w.variant_combo, [self.data.variant] if self.data is not None else [])
        fill_combo(w.fold_combo, [])
        fill_combo(w.arch_combo, [ARCH_LABEL])
        if model.config is not None:
            w._set_training_defaults(model.config.attack)
            w.device_combo.setCurrentText(model.config.device)
        self.fill_taps(tap)
        w.reconstruct_box.setText("Reconstruct the subjects the model was trained on (and held out)")

    def _roles(self) -> None:
        from napari_invert.audit.subjects import resolve_subjects

        model = self.model
        if model.config is not None:
            roles = resolve_subjects(model.config.subjects, self.ids)
            self.trained_on = list(roles.trained_on or [])
            self.holdout = list(roles.holdout)
            self.attack_default = list(roles.attack)
        else:
            self.trained_on = [s for s in (model.trained_on or []) if s in self.ids]
            self.attack_default = [s for s in (model.attack or []) if s in self.ids] or None

    def deactivate(self) -> None:
        self.model = None
        self.w.reconstruct_box.setText("Reconstruct the fold's private subjects afterwards")

    # -- the controls --------------------------------------------------------------------------
    def fill_taps(self, chosen: str | None = None) -> None:
        combo = self.w.tap_combo
        fill_combo(combo, [entry for entry, _ in self.model.choices])
        with blocked(combo):
            for i, (_, description) in enumerate(self.model.choices):
                combo.setItemData(i, description, Qt.ToolTipRole)
            if chosen:
                combo.setCurrentText(chosen)
        self.fill_attack_list()

    def fill_attack_list(self) -> None:
        ticked = set(self.attack_default) if self.attack_default is not None else None
        rows = []
        for sid in self.ids:
            member = sid in self.trained_on
            text = sid + (
                "  (trained the model)" if member else "  (held out)" if sid in self.holdout else ""
            )
            on = (sid in ticked) if ticked is not None else not member
            rows.append((sid, text, on and not member))
        fill_subject_list(self.w.attack_list, rows)

    def target_ids(self) -> list[str]:
        """Subjects to reconstruct: the model's training subjects and held-out ones not ticked
        as the attacker's (else the first four unticked subjects)."""
        chosen = set(self.w.attack_ids())
        wanted = [s for s in self.ids if (s in self.trained_on or s in self.holdout) and s not in chosen]
        return wanted or [s for s in self.ids if s not in chosen][:4]

    def decoder_stem(self) -> Path | None:
        from napari_invert.audit.decoder import decoder_stem

        tap = self.w.tap_combo.currentText()
        return decoder_stem(self.model.source, tap) if tap else None

    def status_text(self) -> str:
        stem = self.decoder_stem()
        if self.data is None:
            return self.note
        exists = stem is not None and stem.with_suffix(".json").is_file()
        return "Your segmenter is loaded." + (" A decoder exists for this tap." if exists else "")

    # -- running -------------------------------------------------------------------------------
    def start_training(self) -> bool:
        from napari_invert.audit.decoder import train_own_decoder

        w = self.w
        try:
            stem = self._check()
            attack = w.attack_ids()
            check_attack_set(
                stem, w.replace_box.isChecked(), attack, self.trained_on, "the model's training subjects"
            )
        except NapariInvertError as exc:
            return refuse(w.status, str(exc))
        train = w.train_config()
        targets = self.target_ids() if w.reconstruct_box.isChecked() else []
        w.jobs.train(
            train_own_decoder,
            self.model.adapter,
            w.tap_combo.currentText(),
            self.data,
            attack,
            targets,
            stem,
            train,
            w.base_filters.value(),
            w.loss_combo.currentText(),
            w.device_combo.currentText(),
            self.trained_on,
            steps=train.steps,
            text=f"Training on {len(attack)} attack subjects (your segmenter)…",
            on_done=self.show,
        )
        return True

    def load_decoder(self) -> bool:
        from napari_invert.audit.decoder import reconstruct_own

        w = self.w
        try:
            stem = self._check()
            stem = chosen_decoder(w.decoder_file) or stem
            if not stem.with_suffix(".json").is_file():
                raise NapariInvertError(f"{stem}: no decoder yet for this tap; train one first")
        except NapariInvertError as exc:
            return refuse(w.status, str(exc))
        targets = self.target_ids()
        w.jobs.reconstruct(
            reconstruct_own,
            self.model.adapter,
            w.tap_combo.currentText(),
            self.data,
            stem,
            targets,
            w.device_combo.currentText(),
            text=f"Reconstructing {len(targets)} subjects with {stem.name}…",
            on_done=self.show,
        )
        return True

    def _check(self) -> Path:
        stem = self.decoder_stem()
        if self.data is None:
            raise NapariInvertError(self.note or "no cohort for your segmenter")
        if stem is None:
            raise NapariInvertError("choose a tap")
        return stem

    def show(self, run: DecoderRun) -> None:
        """A finished / cancelled run: status line, and original | reconstruction pairs."""
        w = self.w
        w.last_outcome = run
        if report_cancelled(w.status, run):
            return
        text = f"[feature inversion] tap {run.tap} ({' + '.join(run.layers)}): {run.message}{loss_text(run)}"
        if run.written:
            text += f"\n{len(run.written)} reconstructions saved to {run.written[0].parent}"
        w.status.setText(text)
        show_info(f"napari-invert: {run.message}")
        show_pairs(w._viewer, run, f"your segmenter, {run.tap}")
