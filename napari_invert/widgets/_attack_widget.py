"""Attack widget: train (or load) an inversion decoder for a study's trained segmenter.

The decoder is trained on the chosen fold's *attack* subjects only (the attacker's own
data, from ``splits.json``), in a napari thread worker with a progress bar and a Cancel
button; the viewer stays responsive. The trained decoder, its curve and the fold's
private subjects' reconstructions are saved under the plugin's own name,
``StudyFolder.plugin_dir(variant, fold, arch, tap)`` (``<tap>/plugin/``), never over the
study's decoder, curve or ``recon/`` (which ``evaluation/`` describes). The Compare widget
then lists them as "(plugin decoder, ...)", with scores computed on demand. A cancelled
training keeps its resumable state (pressing Train again with the same settings continues)
and writes no curve.

With a cohort + segmenter checkpoint (chosen in the Study widget) the cohort is
preprocessed for the segmenter, the decoder is saved next to the checkpoint, and the
attack set defaults to the subjects the checkpoint was NOT trained on (its
``trained_on``); an attack set that overlaps ``trained_on`` is refused.

With the user's own segmenter (published by the Study widget's own-segmenter box on
``SessionState.audit_model_changed``) the dock attacks that model instead
(:mod:`._attack_own`: its discovered taps, its audit config's preprocessing and subjects).
Both modes run their jobs through :mod:`._attack_common` (worker, progress, Cancel, checks,
results in the viewer) and the core's :mod:`napari_invert.attack.job`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget

from napari_invert.config import VALID_TAPS, AttackConfig, StudyConfig, TrainConfig
from napari_invert.errors import NapariInvertError
from napari_invert.study.layout import tap_slug
from napari_invert.study.results import StudyResults
from napari_invert.widgets._attack_common import (
    DecoderJobs,
    add_volume,
    check_attack_set,
    chosen_decoder,
    fill_combo,
    fill_subject_list,
    loss_text,
    refuse,
    report_cancelled,
)
from napari_invert.widgets._attack_jobs import (
    CohortImages,
    Images,
    StudyImages,
    TrainRequest,
    reconstruct_job,
    train_decoder_job,
)
from napari_invert.widgets._attack_own import OwnModelAttack
from napari_invert.widgets._attack_ui import build_attack_ui
from napari_invert.widgets._plugin_results import PluginExperiment
from napari_invert.widgets._qt_util import unwrap_viewer
from napari_invert.widgets._state import CohortSession, session_for
from napari_invert.widgets._study_data import (
    architectures_of,
    decoder_available,
    folds_of,
    segmenter_available,
)
from napari_invert.widgets._workers import describe_error

if TYPE_CHECKING:
    import napari

    from napari_invert.attack.job import DecoderRun


class AttackWidget(QWidget):
    """Train or load an inversion decoder; progress bar and Cancel; results to the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = unwrap_viewer(viewer)
        self._session = session_for(self._viewer)
        self._study: StudyResults | None = None
        self._config: StudyConfig | None = None
        self._cohort: CohortSession | None = None
        self._cohort_ids: list[str] = []
        self._cohort_victims: list[str] = []  # the segmenter's training subjects, if recorded
        self.last_outcome: DecoderRun | None = None
        self._loaded_stem: Path | None = None
        self._own = OwnModelAttack(self)
        self._build_ui()
        self._session.study_changed.connect(self._on_study_changed)
        self._session.cohort_changed.connect(self._on_cohort_changed)
        self._session.audit_model_changed.connect(self._on_audit_model)
        if self._session.study is not None:
            self._on_study_changed(self._session.study)
        elif self._session.audit_model is not None:
            self._on_audit_model(self._session.audit_model)

    # -- UI ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        build_attack_ui(self)
        self.jobs = DecoderJobs(self.progress, self.status, self._update_state)
        self._update_state()

    def _set_training_defaults(self, attack: AttackConfig) -> None:
        self.steps.setValue(attack.train.steps)
        self.batch_size.setValue(attack.train.batch_size)
        self.lr.setValue(attack.train.lr)
        self.base_filters.setValue(attack.decoder_base_filters)
        self.loss_combo.setCurrentText(attack.loss)

    # -- public API ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a training or reconstruction worker runs."""
        return self.jobs.running

    def attack_ids(self) -> list[str]:
        """Ticked subjects of the attack set."""
        return [
            self.attack_list.item(i).data(Qt.UserRole)
            for i in range(self.attack_list.count())
            if self.attack_list.item(i).checkState() == Qt.Checked
        ]

    def private_ids(self) -> list[str]:
        """Subjects to reconstruct after training: the fold's private subjects."""
        if self._own.active:
            return self._own.target_ids()
        if self._study is not None and self.fold_combo.currentIndex() >= 0:
            fold = int(self.fold_combo.currentData())
            return next((list(f.private) for f in folds_of(self._study) if f.fold == fold), [])
        if self._cohort is not None:
            chosen = set(self.attack_ids())
            victims = [s for s in self._cohort_victims if s not in chosen]
            return victims or [s for s in self._cohort_ids if s not in chosen][:4]
        return []

    def selection(self) -> tuple[str, int, str, str] | None:
        """Study mode: the chosen ``(variant, fold, arch, tap)``; ``None`` before a fold is
        chosen (or outside study mode). ``arch`` / ``tap`` may still be empty."""
        if self._study is None or self.fold_combo.currentIndex() < 0:
            return None
        return (
            self.variant_combo.currentText(),
            int(self.fold_combo.currentData()),
            self.arch_combo.currentText(),
            self.tap_combo.currentText(),
        )

    def segmenter_stem(self) -> Path | None:
        if self._study is not None:
            chosen = self.selection()
            if chosen is None or not chosen[2]:
                return None
            return self._study.folder.segmenter_stem(*chosen[:3])
        return self._cohort.segmenter_stem if self._cohort is not None else None

    def decoder_stem(self) -> Path | None:
        tap = self.tap_combo.currentText()
        if not tap:
            return None
        if self._study is not None:
            chosen = self.selection()
            return None if chosen is None else self._study.folder.plugin_decoder_stem(*chosen)
        if self._cohort is not None:
            stem = self._cohort.segmenter_stem
            return stem.with_name(f"{stem.name}_decoder_{tap_slug(tap)}")
        return None

    def train_config(self) -> TrainConfig:
        base = self._config.attack.train if self._config is not None else TrainConfig()
        return base.model_copy(
            update={"steps": self.steps.value(), "batch_size": self.batch_size.value(), "lr": self.lr.value()}
        )

    def start_training(self) -> bool:
        """Validate the choices and start training in a worker; ``False`` if refused."""
        if self.running:
            return False
        if self._own.active:
            return self._own.start_training()
        try:
            request = self._train_request()
        except NapariInvertError as exc:
            return refuse(self.status, str(exc))
        self._loaded_stem = None
        self.jobs.train(
            train_decoder_job,
            request,
            steps=request.train.steps,
            text=f"Training on {len(request.attack_ids)} attack subjects…",
            on_done=self._result_handler(self._spacing()),
        )
        return True

    def cancel(self) -> None:
        """Ask the running training to stop at its next step (its state is kept)."""
        self.jobs.cancel()

    def load_decoder(self) -> bool:
        """Reconstruct the fold's private subjects with a trained decoder (file or the study's)."""
        if self.running:
            return False
        if self._own.active:
            return self._own.load_decoder()
        stem = chosen_decoder(self.decoder_file) or self._default_decoder()
        segmenter, images = self.segmenter_stem(), self._images()
        tap, targets = self.tap_combo.currentText(), self.private_ids()
        if stem is None or segmenter is None or images is None or not tap:
            self.status.setText("Choose a study (or cohort), a fold, an architecture and a tap first.")
            show_error("napari-invert: choose a study (or cohort), a fold, an architecture and a tap first")
            return False
        # the plugin's own decoder writes the plugin's reconstructions; another decoder's are
        # only shown (the study's own are already in the study)
        recon_paths = self._plugin_recon_paths(targets) if stem == self.decoder_stem() else {}
        self._loaded_stem = stem
        self.jobs.reconstruct(
            reconstruct_job,
            images,
            segmenter,
            tap,
            stem,
            targets,
            self.device_combo.currentText(),
            recon_paths,
            text=f"Reconstructing {len(targets)} subjects with {stem.name}…",
            on_done=self._result_handler(self._spacing()),
        )
        return True

    # -- internals -------------------------------------------------------------------------------
    def _default_decoder(self) -> Path | None:
        """The plugin's decoder when it exists, else the study's own (study mode)."""
        stem = self.decoder_stem()
        if stem is not None and stem.with_suffix(".json").is_file():
            return stem
        return self._study_decoder_stem() or stem

    def _study_decoder_stem(self) -> Path | None:
        """The study's own decoder for the selection (written by ``napari-invert study``)."""
        chosen = self.selection()
        if self._study is None or chosen is None or not chosen[3]:
            return None
        return self._study.folder.decoder_stem(*chosen)

    def _images(self) -> Images | None:
        if self._study is not None:
            return StudyImages(self._study, self.variant_combo.currentText())
        if self._cohort is not None:
            return CohortImages(
                self._cohort.cohort_path, self.variant_combo.currentText() or "skull_stripped"
            )
        return None

    def _spacing(self) -> tuple[float, float, float] | None:
        return self._study.spacing if self._study is not None else None

    def _train_request(self) -> TrainRequest:
        images, segmenter, decoder = self._images(), self.segmenter_stem(), self.decoder_stem()
        if images is None or segmenter is None or decoder is None:
            raise NapariInvertError(
                "choose a study (or cohort + segmenter), a fold, an architecture and a tap"
            )
        if not (segmenter.with_suffix(".safetensors").is_file() and segmenter.with_suffix(".json").is_file()):
            raise NapariInvertError(f"{segmenter}: no trained segmenter checkpoint (.safetensors + .json)")
        attack_ids = self.attack_ids()
        check_attack_set(
            decoder,
            self.replace_box.isChecked(),
            attack_ids,
            self._cohort_victims if self._cohort is not None else (),
            "the segmenter's training subjects (its 'trained_on')",
        )
        curve = None
        meta: dict[str, Any] = {}
        targets = self.private_ids() if self.reconstruct_box.isChecked() else []
        recon_paths: dict[str, Path] = {}
        chosen = self.selection()
        if self._study is not None and chosen is not None:
            variant, fold, arch, _ = chosen
            curve = self._study.folder.plugin_decoder_curve(*chosen)
            meta = {"variant": variant, "fold": fold, "arch": arch}
            recon_paths = self._plugin_recon_paths(targets)
        return TrainRequest(
            images=images,
            segmenter_stem=segmenter,
            tap=self.tap_combo.currentText(),
            attack_ids=attack_ids,
            target_ids=targets,
            train=self.train_config(),
            base_filters=self.base_filters.value(),
            loss=self.loss_combo.currentText(),
            device=self.device_combo.currentText(),
            decoder_stem=decoder,
            curve_path=curve,
            meta=meta,
            recon_paths=recon_paths,
        )

    def _plugin_recon_paths(self, targets: list[str]) -> dict[str, Path]:
        """Where the plugin's reconstructions of ``targets`` go (study mode; else empty)."""
        chosen = self.selection()
        if self._study is None or chosen is None:
            return {}
        return {sid: self._study.folder.plugin_recon(*chosen, sid) for sid in targets}

    def _plugin_experiment(self) -> PluginExperiment:
        return PluginExperiment(
            self.variant_combo.currentText(), self.arch_combo.currentText(), self.tap_combo.currentText()
        )

    def _result_handler(self, spacing: tuple[float, float, float] | None) -> Any:
        """The worker's result handler: show the run (spacing fixed when the job started)."""

        def returned(outcome: DecoderRun) -> None:
            self._on_outcome(outcome, spacing)

        return returned

    def _on_outcome(self, outcome: DecoderRun, spacing: tuple[float, float, float] | None) -> None:
        self.last_outcome = outcome
        if report_cancelled(self.status, outcome):
            return
        if outcome.saved is not None:
            self.status.setText(f"Decoder saved: {outcome.saved.with_suffix('')}{loss_text(outcome)}")
            show_info(f"napari-invert: {outcome.message}")
        else:
            self.status.setText(outcome.message)
        self._show_recons(outcome, spacing)

    def _show_recons(self, outcome: DecoderRun, spacing: tuple[float, float, float] | None) -> None:
        """Study mode: saved reconstructions go to the Compare grid (never loose layers)."""
        if not outcome.recons:
            return
        if self._study is not None and outcome.written:
            experiment = self._plugin_experiment()
            where = outcome.written[0].parent
            self.status.setText(
                self.status.text() + f"\n{len(outcome.written)} reconstructions saved to {where}; "
                f"Compare lists them as '{experiment.label}'."
            )
            self._session.announce_plugin_results(experiment)
            if self._session.compare_docked:
                return
        elif (
            self._loaded_stem is not None
            and self._loaded_stem == self._study_decoder_stem()
            and self._session.compare_docked
        ):  # the same as the study's recon/: shown by Compare
            self.status.setText(self.status.text() + "\nThe study's own reconstructions: see Compare.")
            return
        if outcome.affine is not None and spacing is None:
            spacing = tuple(float(v) for v in np.linalg.norm(outcome.affine[:3, :3], axis=0))
        label = f"{self.arch_combo.currentText() or 'segmenter'} {self.tap_combo.currentText()}"
        grid = self._viewer.canvas.grid
        for sid, recon in outcome.recons.items():
            layer = add_volume(self._viewer, recon, f"{sid} recon (plugin, {label})", spacing)
            if grid.enabled:  # never push the Compare grid's originals out of their cells
                self._viewer.layers.move(self._viewer.layers.index(layer), 0)
                layer.visible = False

    # -- study / cohort -----------------------------------------------------------------------------
    def _on_study_changed(self, study: StudyResults | None) -> None:
        self._study, self._config = study, self._session.config
        if study is None:
            self._update_state()
            return
        self._cohort = None
        self._own.deactivate()
        self._set_training_defaults(self._config.attack if self._config is not None else AttackConfig())
        if self._config is not None:
            self.device_combo.setCurrentText(self._config.device)
        name = self._config.name if self._config is not None else study.root.name
        self.source_label.setText(f"Study '{name}' ({study.root})")
        fill_combo(self.variant_combo, [(v, v) for v in study.variants])
        fill_combo(self.fold_combo, [(f"fold {f.fold}", f.fold) for f in folds_of(study)])
        fill_combo(self.arch_combo, [(a, a) for a in architectures_of(study, self._config)])
        self._on_arch_changed()

    def _on_cohort_changed(self, cohort: CohortSession | None) -> None:
        if cohort is None:
            return
        self._cohort, self._study = cohort, None
        self._own.deactivate()
        try:
            from napari_invert.data.cohort import Cohort
            from napari_invert.models import load_segmenter

            loaded = Cohort.from_path(cohort.cohort_path)
            self._cohort_ids = loaded.subject_ids
            variants = loaded.variants()
            model, meta = load_segmenter(cohort.segmenter_stem, "cpu")
            arch = model.arch
            self._cohort_victims = [s for s in meta.get("trained_on", []) if s in self._cohort_ids]
        except Exception as exc:
            self._cohort = None
            self.status.setText(f"Cohort not usable: {describe_error(exc)}")
            show_error(f"napari-invert: cohort/segmenter not usable: {describe_error(exc)}")
            self._update_state()
            return
        self.source_label.setText(f"Cohort {cohort.cohort_path} with segmenter {cohort.segmenter_stem.name}")
        fill_combo(self.variant_combo, variants)
        fill_combo(self.fold_combo, [])
        fill_combo(self.arch_combo, [arch])
        self._on_arch_changed()

    def _on_audit_model(self, model: Any) -> None:
        """The Study dock's own segmenter (or ``None``): switch this dock to it (or back)."""
        if self.running:
            return
        if model is None:
            self._own.deactivate()
        else:
            self._study = self._cohort = self._config = None
            self._own.activate(model, self._session.audit_tap)
        self._update_state()

    def _on_arch_changed(self, *_: Any) -> None:
        if self._own.active:
            self._own.fill_taps(self.tap_combo.currentText())
            return self._update_state()
        arch = self.arch_combo.currentText()
        taps = list(VALID_TAPS.get(arch, ()))
        if self._config is not None and arch in self._config.attack.taps:
            taps = list(self._config.attack.taps[arch]) + [
                t for t in taps if t not in self._config.attack.taps[arch]
            ]
        fill_combo(self.tap_combo, taps)
        self._on_selection_changed()

    def _on_selection_changed(self, *_: Any) -> None:
        if self._own.active:
            self._own.fill_attack_list()
            return self._update_state()
        if self._study is not None and self.fold_combo.currentIndex() >= 0:
            fold = int(self.fold_combo.currentData())
            ids = next((list(f.attack) for f in folds_of(self._study) if f.fold == fold), [])
        else:
            ids = list(self._cohort_ids)
        victims = set(self._cohort_victims) if self._cohort is not None else set()
        fill_subject_list(
            self.attack_list,
            [(s, s + ("  (segmenter trained on it)" if s in victims else ""), s not in victims) for s in ids],
        )
        self._update_state()

    def _update_state(self, *_: Any) -> None:
        running, chosen = self.running, self.selection()
        has_source = self._study is not None or self._cohort is not None or self._own.active
        seg = self.segmenter_stem()
        seg_ok = (
            seg is not None
            and seg.with_suffix(".safetensors").is_file()
            and seg.with_suffix(".json").is_file()
        )
        if self._own.active:
            seg_ok = self._own.data is not None
            self.segmenter_label.setText(self._own.status_text())
        elif not has_source:
            self.segmenter_label.setText("")
        elif seg_ok:
            has_decoder = (
                self._study is not None
                and chosen is not None
                and bool(chosen[3])
                and decoder_available(self._study, *chosen)
            )
            self.segmenter_label.setText(
                "Trained segmenter found." + (" A decoder exists for this tap." if has_decoder else "")
            )
        else:
            self.segmenter_label.setText("No trained segmenter for this variant/fold/architecture.")
        if self._study is not None and chosen is not None and chosen[2]:
            seg_ok = seg_ok and segmenter_available(self._study, *chosen[:3])
        for widget in (
            self.variant_combo,
            self.fold_combo,
            self.arch_combo,
            self.tap_combo,
            self.attack_list,
            self.steps,
            self.batch_size,
            self.lr,
            self.base_filters,
            self.loss_combo,
            self.device_combo,
            self.replace_box,
            self.reconstruct_box,
            self.load_button,
        ):
            widget.setEnabled(has_source and not running)
        self.train_button.setEnabled(has_source and seg_ok and not running)
        self.train_button.setToolTip(
            "" if seg_ok else "needs a trained segmenter checkpoint for this selection"
        )
        self.cancel_button.setEnabled(running)
