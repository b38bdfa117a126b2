"""Study widget: open a study folder (or a cohort + a trained segmenter) for the viewer.

The opened :class:`~napari_invert.study.results.StudyResults` is published through the
viewer's :class:`~napari_invert.widgets._state.SessionState`, where the Attack and
Compare widgets pick it up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import FileEdit
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import (
    QGroupBox,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_invert.config import StudyConfig
from napari_invert.errors import NapariInvertError
from napari_invert.study.results import StudyResults, count_similarity_matrices
from napari_invert.widgets._audit_box import AuditModelBox
from napari_invert.widgets._overlays import deformation_on_demand
from napari_invert.widgets._qt_util import scrolled, unwrap_viewer  # noqa: F401  (scrolled: old import path)
from napari_invert.widgets._state import CohortSession, open_study, session_for
from napari_invert.widgets._study_data import (
    architectures_of,
    deformation_status,
    folds_of,
    read_metrics,
    segmenter_available,
)
from napari_invert.widgets._study_summary import (
    THREAT_HEADINGS,
    arch_label,
    threat_sections,
    victim_warning_text,
)
from napari_invert.widgets._workers import describe_error, guard_slot

if TYPE_CHECKING:
    import napari


def _field(value: Any) -> str:
    """A path field's text; ``""`` when empty (magicgui gives ``Path('.')`` for an empty field)."""
    text = "" if value is None else str(value).strip()
    return "" if text in ("", ".") else text


class StudyWidget(QWidget):
    """Open a study folder and show its folds, architectures, variants and subjects."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = unwrap_viewer(viewer)
        self._session = session_for(self._viewer)

        self.study_dir = FileEdit(mode="d", label="Study folder")
        self.open_button = QPushButton("Open study")
        self.open_button.clicked.connect(guard_slot(self._on_open_clicked, "opening the study"))
        self.status = QLabel("No study opened.")
        self.victim_warning = QLabel()
        self.victim_warning.setWordWrap(True)
        self.victim_warning.setStyleSheet(
            "QLabel { background: #b00020; color: white; font-weight: bold; padding: 6px; }"
        )
        self.victim_warning.setVisible(False)
        self._warned: set[str] = set()
        self.status.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Study", "Details"])
        self.tree.setColumnCount(2)
        self.tree.setMinimumHeight(180)

        study_box = QGroupBox("Study folder")
        study_layout = QVBoxLayout(study_box)
        study_layout.addWidget(self.study_dir.native)
        study_layout.addWidget(self.open_button)

        self.cohort_dir = FileEdit(mode="d", label="Cohort folder")
        self.segmenter_file = FileEdit(mode="r", filter="*.safetensors *.json", label="Segmenter")
        self.use_cohort_button = QPushButton("Use cohort + segmenter")
        self.use_cohort_button.clicked.connect(guard_slot(self._on_use_cohort_clicked, "using the cohort"))
        cohort_box = QGroupBox("…or a cohort and a trained segmenter")
        cohort_layout = QVBoxLayout(cohort_box)
        cohort_layout.addWidget(self.cohort_dir.native)
        cohort_layout.addWidget(self.segmenter_file.native)
        cohort_layout.addWidget(self.use_cohort_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.victim_warning)
        layout.addWidget(study_box)
        layout.addWidget(self.status)
        layout.addWidget(self.tree, stretch=1)
        layout.addWidget(cohort_box)
        self.audit_box = AuditModelBox(lambda: self.cohort_dir.value, self._session.set_audit_model)
        layout.addWidget(self.audit_box)

        self._session.study_changed.connect(self._on_study_changed)
        if self._session.study is not None:
            self._on_study_changed(self._session.study)

    # -- public API ------------------------------------------------------------------
    @property
    def study(self) -> StudyResults | None:
        return self._session.study

    def open(self, path: str | Path) -> StudyResults | None:
        """Open ``path`` and publish it; a problem is shown in the viewer, never raised."""
        try:
            results, config = open_study(path)
        except NapariInvertError as exc:
            self.status.setText(f"Could not open: {exc}")
            show_error(f"napari-invert: cannot open study: {exc}")
            return None
        except Exception as exc:  # anything else must not escape to Qt either
            self.status.setText(f"Could not open: {describe_error(exc)}")
            show_error(f"napari-invert: cannot open study {path}: {describe_error(exc)}")
            return None
        if Path(str(self.study_dir.value)) != results.root:
            self.study_dir.value = results.root
        self._session.set_study(results, config)
        return results

    def use_cohort(self, cohort_path: str | Path, segmenter_stem: str | Path) -> CohortSession | None:
        """Publish a cohort + segmenter checkpoint session (validated cheaply here)."""
        from napari_invert.checkpoint import checkpoint_exists, checkpoint_paths

        problems = []
        cohort_text, segmenter_text = _field(cohort_path), _field(segmenter_stem)
        if not cohort_text:
            problems.append("choose a cohort folder (the 'Cohort folder' field is empty)")
        if not segmenter_text:
            problems.append("choose a segmenter checkpoint (.safetensors or .json; the field is empty)")
        cohort = Path(cohort_text).expanduser()
        stem = Path(segmenter_text).expanduser()
        if not problems:
            try:
                weights, meta = checkpoint_paths(stem)
                stem = weights.with_suffix("")
            except (ValueError, OSError) as exc:
                problems.append(f"{segmenter_text}: not a checkpoint path ({exc})")
            else:
                if not cohort.is_dir():
                    problems.append(f"{cohort}: cohort folder not found")
                if not checkpoint_exists(stem):
                    problems.append(f"{stem}: needs both {weights.name} and {meta.name}")
        if problems:
            message = "; ".join(problems)
            self.status.setText(message)
            show_error(f"napari-invert: {message}")
            return None
        session = CohortSession(cohort, stem)
        self._session.set_cohort(session)
        self.status.setText(
            f"Cohort {cohort.name} with segmenter {stem.name} selected for the Attack widget."
        )
        show_info(f"napari-invert: cohort {cohort} + segmenter {stem.name} selected")
        return session

    # -- slots ---------------------------------------------------------------------------
    def _on_open_clicked(self) -> None:
        self.open(self.study_dir.value)

    def _on_use_cohort_clicked(self) -> None:
        self.use_cohort(self.cohort_dir.value, self.segmenter_file.value)

    def _on_study_changed(self, study: StudyResults | None) -> None:
        try:
            self._fill_tree(study, self._session.config)
        except Exception as exc:  # a half-broken study still opens; say what is wrong
            self.status.setText(f"Study opened, but its summary failed: {describe_error(exc)}")

    def _show_victim_warning(self, study: StudyResults | None) -> None:
        """The banner at the top of the dock (+ one napari warning per study) when victims
        do not segment; hidden otherwise."""
        text = victim_warning_text(study)
        self.victim_warning.setText(text)
        self.victim_warning.setVisible(bool(text))
        if text and study is not None and str(study.root) not in self._warned:
            self._warned.add(str(study.root))
            show_warning(f"napari-invert: {text}")

    # -- summary tree ----------------------------------------------------------------------
    def _fill_tree(self, study: StudyResults | None, config: StudyConfig | None) -> None:
        self.tree.clear()
        self._show_victim_warning(study)
        if study is None:
            self.status.setText("No study opened.")
            return
        name = config.name if config is not None else study.root.name
        self.status.setText(f"Study '{name}' — {study.root}")
        ids = study.subject_ids
        folds = folds_of(study)

        def add(parent: QTreeWidget | QTreeWidgetItem, text: str, detail: str = "") -> QTreeWidgetItem:
            item = QTreeWidgetItem([text, detail])
            if isinstance(parent, QTreeWidget):
                parent.addTopLevelItem(item)
            else:
                parent.addChild(item)
            return item

        fold_of = {s: f.fold for f in folds for s in f.private}
        subjects = add(self.tree, f"Subjects ({len(ids)})")
        for sid in ids:
            add(subjects, sid, f"private in fold {fold_of[sid]}" if sid in fold_of else "in no private fold")
        fold_root = add(self.tree, f"Folds ({len(folds)})")
        for fold in folds:
            item = add(
                fold_root, f"fold {fold.fold}", f"{len(fold.private)} private, {len(fold.attack)} attack"
            )
            add(item, "private (victim training)", ", ".join(fold.private))
            add(item, "attack (attacker's data)", ", ".join(fold.attack))
        variants = add(self.tree, f"Variants ({len(study.variants)})")
        for variant in study.variants:
            add(variants, variant)
        archs = architectures_of(study, config)
        arch_root = add(self.tree, f"Architectures ({len(archs)})")
        for arch in archs:
            for variant in study.variants:
                n = sum(segmenter_available(study, variant, f.fold, arch) for f in folds)
                kind = "segmenter" if "@" in arch else "trained segmenter"
                add(arch_root, f"{arch_label(arch)} ({variant})", f"{kind} in {n}/{len(folds)} folds")
        experiments = study.experiments()
        exp_root = add(self.tree, f"{THREAT_HEADINGS['reconstructions']} ({len(experiments)} experiments)")
        for exp in experiments:
            n = sum(study.has_recon(exp, s) for s in ids if s in fold_of)
            add(exp_root, f"{arch_label(exp.arch)} {exp.tap} ({exp.variant})", f"{n}/{len(ids)} subjects")
        evaluation = add(self.tree, "Evaluation")
        try:
            table = read_metrics(study.folder)
            add(evaluation, "metrics.csv", "present" if table is not None else "not evaluated yet")
        except NapariInvertError as exc:
            table = None
            add(evaluation, "metrics.csv", f"unreadable: {exc}")
        n_mat = count_similarity_matrices(study.folder)
        add(evaluation, "similarity matrices", str(n_mat))
        ok, reason = deformation_status(study, config, table)
        on_demand, why_not = deformation_on_demand()
        stored = ok and "found" in reason
        text = "stored" if stored else ("on demand (ANTs)" if on_demand else "not available")
        add(evaluation, "deformation", text).setToolTip(1, reason if ok else why_not)
        expand = {1, 4}
        for heading, detail, rows in threat_sections(study, archs):
            expand.add(self.tree.topLevelItemCount())
            section = add(self.tree, heading, detail)
            for text, row_detail in rows:
                add(section, text, row_detail).setToolTip(1, row_detail)
        for i in range(self.tree.topLevelItemCount()):
            self.tree.topLevelItem(i).setExpanded(i in expand)
        self.tree.resizeColumnToContents(0)
