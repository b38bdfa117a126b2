"""napari plugin: the Attack widget (training, cancelling, saving, cohort + checkpoint mode).

Run ``QT_API=pyqt6 pytest tests/test_widgets_attack.py`` (pytest-xvfb provides the display).
The study folder ``trainable_dir`` (untrained segmenter checkpoints) comes from ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from widget_helpers import (
    WAIT_MS,
    cell_titles,
    errors_since,
    n_records,
    needs_display,
    open_compare,
    train_and_cancel,
)

from napari_invert.study.results import StudyResults


def _study_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.gui
@needs_display
def test_attack_training_keeps_the_study_consistent(make_napari_viewer, qtbot, trainable_dir: Path) -> None:
    """Issue 13.4/19: a plugin-trained decoder, its curve and its reconstructions are saved under
    ``<tap>/plugin/``; the study's files are untouched; a cancelled run writes no curve; the
    reconstructions join the Compare grid (no loose layers), labelled, with their own scores."""
    from napari_invert.attack import job as attack_job
    from napari_invert.checkpoint import checkpoint_exists
    from napari_invert.metrics.correlation import pearson_correlation
    from napari_invert.widgets._attack_widget import AttackWidget
    from napari_invert.widgets._layers import META_KEY
    from napari_invert.widgets._plugin_results import PluginExperiment

    viewer = make_napari_viewer()
    compare = open_compare(viewer, qtbot, trainable_dir)
    attack = AttackWidget(viewer)
    viewer.window.add_dock_widget(attack, name="Attack")
    results = compare.study
    folder, ids = results.folder, results.subject_ids
    assert attack.train_button.isEnabled()
    fold0 = results.splits["folds"][0]
    assert attack.attack_ids() == fold0["attack"]  # the attacker's own data only
    variant, arch, tap = "skull_stripped", attack.arch_combo.currentText(), attack.tap_combo.currentText()
    stem = attack.decoder_stem()
    assert stem == folder.plugin_decoder_stem(variant, 0, arch, tap)
    curve = folder.plugin_decoder_curve(variant, 0, arch, tap)
    before = _study_files(trainable_dir)

    # a long training, cancelled after its first steps: nothing saved, no curve anywhere
    attack.batch_size.setValue(1)
    attack.base_filters.setValue(2)
    train_and_cancel(attack, qtbot)
    assert not checkpoint_exists(stem) and not curve.exists()
    assert checkpoint_exists(attack_job.resume_stem(stem))  # the state is kept for a resume
    study_curve = folder.decoder_curve(variant, 0, arch, tap)
    assert study_curve.read_bytes() == before[study_curve]  # the study's own curve is untouched
    assert "Cancelled" in attack.status.text() and attack.train_button.isEnabled()

    # a short training runs to the end: decoder, curve and reconstructions under plugin/
    attack.steps.setValue(3)
    assert attack.start_training()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    outcome = attack.last_outcome
    assert not outcome.cancelled and outcome.saved is not None, attack.status.text()
    assert checkpoint_exists(stem) and len(curve.read_text(encoding="utf-8").splitlines()) == 1 + 3
    assert not checkpoint_exists(attack_job.resume_stem(stem))  # removed once the decoder is saved
    for sid in fold0["private"]:
        assert folder.plugin_recon(variant, 0, arch, tap, sid).is_file()
    after = _study_files(trainable_dir)
    assert all(after[p] == data for p, data in before.items())  # the study's files are unchanged
    assert all("plugin" in p.relative_to(trainable_dir).parts for p in set(after) - set(before))
    assert not checkpoint_exists(folder.decoder_stem(variant, 0, arch, tap))

    # Compare shows them as a labelled experiment with scores of their own (never the study's)
    plugin = PluginExperiment(variant, arch, tap)
    assert "plugin decoder" in plugin.label
    assert plugin in compare.selected_experiments()
    compare.set_subject(ids.index(fold0["private"][0]))
    qtbot.waitUntil(
        lambda: not compare.busy and any(c.experiment == plugin for c in compare.current_view.cells),
        timeout=WAIT_MS,
    )
    assert all(META_KEY in lyr.metadata for lyr in viewer.layers)  # no loose layers
    roles = [lyr.metadata[META_KEY]["role"] for lyr in viewer.layers]
    assert roles[-1] == "original" and roles.count("recon") == len(compare.selected_experiments())
    view = compare.current_view
    cell = next(i for i, c in enumerate(view.cells) if c.experiment == plugin)
    r = pearson_correlation(view.recons[cell], view.reference, mask=view.mask)
    assert float(compare.metrics_text()[plugin.label]["correlation"]) == pytest.approx(r, abs=1e-3)
    assert "computed on demand" in compare.metrics_title.text()
    assert any("plugin" in t for t in cell_titles(viewer))

    # refusing to overwrite without the tick box
    start = n_records()
    assert not attack.start_training()
    assert errors_since(start)
    # the saved decoder can be loaded again to reconstruct the private subjects
    assert attack.load_decoder()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    assert set(attack.last_outcome.recons) == set(fold0["private"])
    assert all(META_KEY in lyr.metadata for lyr in viewer.layers)
    # a bad decoder file: a message in the viewer, nothing raised into Qt
    bad = trainable_dir / "not_a_decoder.json"
    bad.write_text("{}", encoding="utf-8")
    attack.decoder_file.value = bad
    start = n_records()
    assert attack.load_decoder()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    assert "failed" in attack.status.text() and errors_since(start)


@pytest.mark.gui
@needs_display
def test_attack_dock_from_the_plugins_menu_shows_train_and_progress(make_napari_viewer, qtbot) -> None:
    """Issue 13.19: opened beside the other docks, Train, Cancel and the progress bar are visible."""
    from napari_invert.widgets._attack_ui import MIN_HEIGHT

    viewer = make_napari_viewer(show=True)
    viewer.window.add_plugin_dock_widget("napari-invert", "Study")
    viewer.window.add_plugin_dock_widget("napari-invert", "Compare")
    _, attack = viewer.window.add_plugin_dock_widget("napari-invert", "Attack")
    qtbot.wait(200)
    assert attack.height() >= MIN_HEIGHT
    for widget in (attack.train_button, attack.cancel_button, attack.progress):
        assert widget.isVisible() and not widget.visibleRegion().isEmpty(), widget


@pytest.mark.gui
@needs_display
def test_attack_on_a_cohort_with_a_segmenter(
    make_napari_viewer, qtbot, trainable_dir: Path, tmp_path: Path
) -> None:
    """Cohort + checkpoint mode: the cohort is preprocessed for the segmenter, the decoder is
    saved next to the checkpoint. Issue 13.5: the attack set defaults to the subjects the
    segmenter was not trained on, and an overlap with ``trained_on`` is refused."""
    from qtpy.QtCore import Qt

    from napari_invert.checkpoint import checkpoint_exists, load_checkpoint
    from napari_invert.data.nifti import save_nifti
    from napari_invert.widgets._attack_widget import AttackWidget
    from napari_invert.widgets._study_widget import StudyWidget

    results = StudyResults(trainable_dir)
    cohort = tmp_path / "cohort"
    for sid in results.subject_ids:
        save_nifti(
            cohort / "images" / f"{sid}.nii.gz", results.original("skull_stripped", sid), results.affine
        )
        mask = results.mask("skull_stripped", sid).astype(np.uint8)
        save_nifti(cohort / "masks" / f"{sid}.nii.gz", mask, results.affine)
    segmenter = results.folder.segmenter_stem("skull_stripped", 0, "unet")
    trained_on = load_checkpoint(segmenter, device="cpu")[1]["trained_on"]
    assert trained_on == results.splits["folds"][0]["private"]
    viewer = make_napari_viewer()
    study, attack = StudyWidget(viewer), AttackWidget(viewer)
    assert study.use_cohort(cohort, segmenter.with_suffix(".json")) is not None
    assert attack.arch_combo.currentText() == "unet"
    assert attack.attack_ids() == [s for s in results.subject_ids if s not in trained_on]
    assert attack.private_ids() == trained_on
    assert attack.tap_combo.currentText() in ("bottleneck", "bottleneck+skips")
    attack.steps.setValue(2)
    attack.batch_size.setValue(1)
    attack.base_filters.setValue(2)
    attack.device_combo.setCurrentText("cpu")
    victim_row = results.subject_ids.index(trained_on[0])
    attack.attack_list.item(victim_row).setCheckState(Qt.Checked)  # a training subject: refused
    start = n_records()
    assert not attack.start_training() and not attack.running
    assert "trained_on" in attack.status.text() and trained_on[0] in attack.status.text()
    assert errors_since(start)
    attack.attack_list.item(victim_row).setCheckState(Qt.Unchecked)
    assert attack.start_training(), attack.status.text()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    outcome = attack.last_outcome
    assert outcome is not None and outcome.saved is not None, attack.status.text()
    assert checkpoint_exists(attack.decoder_stem()) and attack.decoder_stem().parent == segmenter.parent
    assert set(outcome.recons) == set(trained_on)
