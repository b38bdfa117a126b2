"""napari plugin: manifest, reader, sample data, the docks sharing one study, bad input.

GUI tests need a display: pytest-xvfb starts Xvfb automatically when it is installed
(Qt's "offscreen" platform crashes napari when an image layer is added). Run::

    QT_API=pyqt6 pytest tests/test_widgets_plugin.py

They use napari's ``make_napari_viewer`` fixture (napari's pytest plugin, registered by
napari's ``pytest11`` entry point) and pytest-qt's ``qtbot``. The study folders
(``study_dir``, ``evaluated_dir``, ``trainable_dir``) come from ``conftest.py``.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from widget_helpers import MANIFEST, WAIT_MS, errors_since, n_records, needs_display

from napari_invert.study.results import StudyResults


# -- manifest, reader, sample data (no viewer needed) ---------------------------------------
def test_manifest_is_valid_and_commands_import() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    manifest.validate_imports()
    ids = {c.id for c in manifest.contributions.commands}
    assert {w.command for w in manifest.contributions.widgets} <= ids
    assert {w.display_name for w in manifest.contributions.widgets} == {"Study", "Attack", "Compare"}
    assert {s.display_name for s in manifest.contributions.sample_data} == {"Demo cohort", "LPBA40 subject"}
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), name))


def test_reader(study_dir: Path, tmp_path: Path) -> None:
    from napari_invert.widgets._reader import get_reader

    reader = get_reader(str(study_dir))
    assert reader is not None
    layers = reader(str(study_dir))
    results = StudyResults(study_dir)
    first = results.subject_ids[0]
    assert len(layers) == len(results.experiments()) + 1
    data, kwargs, kind = layers[-1]
    assert kind == "image" and kwargs["name"] == f"{first} · original"
    np.testing.assert_array_equal(data, results.original("skull_stripped", first))
    assert kwargs["scale"] == pytest.approx(results.spacing)
    assert get_reader(str(tmp_path)) is None  # not a study folder
    assert get_reader([str(study_dir), str(tmp_path)]) is None


def test_reader_claims_study_folders_and_nifti_only(study_dir: Path, tmp_path: Path) -> None:
    """Issue 13.20: the manifest claims study folders and NIfTI files, not "*"; .nii.gz opens."""
    import yaml
    from npe2 import PluginManager, PluginManifest

    from napari_invert.widgets._reader import get_reader

    reader = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))["contributions"]["readers"][0]
    assert sorted(reader["filename_patterns"]) == ["*.nii", "*.nii.gz"] and reader["accepts_directories"]
    pm = PluginManager()
    pm.register(PluginManifest.from_file(MANIFEST))
    results = StudyResults(study_dir)
    nii_gz = results.folder.original("skull_stripped", results.subject_ids[0])
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG")
    claimed = {str(p): [r.command for r in pm.iter_compatible_readers([str(p)])] for p in (nii_gz, png)}
    assert claimed[str(nii_gz)] == ["napari-invert.get_reader"] and claimed[str(png)] == []

    layers = get_reader(str(nii_gz))(str(nii_gz))
    ((data, kwargs, kind),) = layers
    assert kind == "image" and kwargs["name"] == results.subject_ids[0]
    np.testing.assert_array_equal(data, results.original("skull_stripped", results.subject_ids[0]))
    assert kwargs["scale"] == pytest.approx(results.spacing)
    labels_path = results.folder.labels("skull_stripped", results.subject_ids[0])
    ((labels, _, kind),) = get_reader(str(labels_path))(str(labels_path))
    assert kind == "labels" and labels.max() >= 2
    assert get_reader(str(png)) is None


def test_reader_reports_a_broken_study(tmp_path: Path) -> None:
    from napari_invert.widgets._reader import read_study

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "splits.json"):
        (broken / name).write_text("{}", encoding="utf-8")
    (broken / "cohort.json").write_text("{not json", encoding="utf-8")
    start = n_records()
    assert read_study(str(broken)) == [(None,)]
    assert any("cohort.json" in m for m in errors_since(start))


def test_lpba40_sample_or_clear_error() -> None:
    from napari_invert.config import default_data_root
    from napari_invert.widgets._sample_data import lpba40_sample

    start = n_records()
    layers = lpba40_sample()
    if (default_data_root() / "lpba40" / "images" / "S01.nii.gz").is_file():
        assert [kind for _, _, kind in layers] == ["image", "labels"]
        assert layers[0][0].ndim == 3
    else:
        assert layers == [] and errors_since(start)


def test_demo_cohort_sample_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sample writes the real demo cohort once into the cache, then reuses it."""
    from napari_invert.widgets._sample_data import demo_cohort_folder, demo_cohort_sample

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    layers = demo_cohort_sample()
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert layers[0][1]["scale"] == pytest.approx((3.0, 3.0, 3.0))
    assert layers[0][0].shape == (64, 80, 64) and float(layers[0][0].std()) > 0
    assert set(np.unique(layers[1][0])) >= set(range(1, 17))  # the demo's 16 structures
    folder = demo_cohort_folder()
    stamp = (folder / "cohort.yaml").stat().st_mtime_ns
    again = demo_cohort_sample()
    assert np.array_equal(again[0][0], layers[0][0])
    assert (folder / "cohort.yaml").stat().st_mtime_ns == stamp  # not rewritten
    assert folder.is_relative_to(tmp_path / "napari-invert")


# -- widgets ---------------------------------------------------------------------------------
@pytest.mark.gui
@needs_display
def test_plugin_widgets_share_the_study(make_napari_viewer, study_dir: Path) -> None:
    """Widgets made by napari (viewer injected as a proxy) share one session; reader works."""
    from napari_invert.widgets._state import session_for

    viewer = make_napari_viewer()
    _, study = viewer.window.add_plugin_dock_widget("napari-invert", "Study")
    _, compare = viewer.window.add_plugin_dock_widget("napari-invert", "Compare")
    _, attack = viewer.window.add_plugin_dock_widget("napari-invert", "Attack")
    results = study.open(study_dir)
    assert results is not None and session_for(viewer).study is results
    assert compare.study is results and attack._study is results
    tops = [study.tree.topLevelItem(i).text(0) for i in range(study.tree.topLevelItemCount())]
    assert {"Subjects (3)", "Folds (2)", "Architectures (2)", "Variants (1)"} <= set(tops)
    assert "Reconstructions — feature inversion (2 experiments)" in tops


@pytest.mark.gui
@needs_display
def test_dropped_study_opens_with_the_docks(
    make_napari_viewer, qtbot, study_dir: Path, tmp_path: Path
) -> None:
    """Issue 13.20/21: a dropped study opens with Study + Compare docked (as ``napari-invert
    view``), its layers in the Compare grid; a bad folder is reported exactly once."""
    from napari_invert.widgets._launch import open_study_in_viewer
    from napari_invert.widgets._state import session_for

    viewer = make_napari_viewer()
    viewer.open(str(study_dir), plugin="napari-invert")
    session = session_for(viewer)
    assert session.study is not None and session.study.root == study_dir
    study_widget, compare = session.launched_docks
    assert compare.study is session.study and study_widget.study is session.study
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view is not None, timeout=WAIT_MS)
    assert [lyr.metadata["napari_invert"]["role"] for lyr in viewer.layers] == ["recon", "recon", "original"]
    docks = set(viewer.window.dock_widgets)
    viewer.open(str(study_dir), plugin="napari-invert")  # dropping it again reuses the docks
    assert set(viewer.window.dock_widgets) == docks

    broken = tmp_path / "broken"
    shutil.copytree(study_dir, broken)
    (broken / "splits.json").write_text("[1, 2", encoding="utf-8")
    start = n_records()
    open_study_in_viewer(viewer, broken)
    assert len(errors_since(start)) == 1, errors_since(start)


@pytest.mark.gui
@needs_display
def test_a_partial_study_opens_on_a_reconstructed_subject(
    make_napari_viewer, qtbot, study_dir: Path, tmp_path: Path
) -> None:
    """A study run on some folds only: Compare opens on a subject that has reconstructions
    (not on the first subject, whose fold was not run) and marks the others."""
    from napari_invert.study.results import StudyResults
    from napari_invert.widgets._launch import open_study_in_viewer

    partial = tmp_path / "partial"
    shutil.copytree(study_dir, partial)
    results = StudyResults(partial)
    first = results.subject_ids[0]
    variant = results.variants[0]
    shutil.rmtree(partial / variant / f"fold{results.fold_of(first)}")  # its fold never ran
    done = StudyResults(partial).reconstructed_subjects(variant)
    assert first not in done and done

    viewer = make_napari_viewer()
    start = n_records()
    _, compare = open_study_in_viewer(viewer, partial)
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view is not None, timeout=WAIT_MS)
    assert compare.current_subject in done
    assert "not reconstructed yet" in compare.subject_list.item(0).text()
    assert errors_since(start) == []


@pytest.mark.gui
@needs_display
def test_bad_folders_show_errors_not_exceptions(make_napari_viewer, tmp_path: Path, study_dir: Path) -> None:
    from napari_invert.widgets._compare_widget import CompareWidget
    from napari_invert.widgets._study_widget import StudyWidget

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    compare = CompareWidget(viewer)
    broken = tmp_path / "broken"
    shutil.copytree(study_dir, broken)
    (broken / "splits.json").write_text("[1, 2", encoding="utf-8")
    for bad in (tmp_path / "missing", tmp_path, broken, study_dir / "config.yaml"):
        start = n_records()
        assert widget.open(bad) is None
        assert compare.open(bad) is None
        assert len(errors_since(start)) == 2, bad
    assert "Could not open" in widget.status.text()
    assert compare.study is None and not compare.next_button.isEnabled()
    start = n_records()
    assert widget.use_cohort(tmp_path / "nope", tmp_path / "segmenter") is None
    assert errors_since(start)


@pytest.mark.gui
@needs_display
def test_use_cohort_with_empty_fields_says_what_is_missing(make_napari_viewer, qtbot) -> None:
    """Issue 13.14: the button with empty fields shows a message; nothing raises inside Qt."""
    from qtpy.QtCore import Qt

    from napari_invert.widgets._study_widget import StudyWidget

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    start = n_records()
    qtbot.mouseClick(widget.use_cohort_button, Qt.LeftButton)  # an exception here fails the test
    assert "cohort folder" in widget.status.text() and "field is empty" in widget.status.text()
    assert len(errors_since(start)) == 1
    widget.cohort_dir.value = "/"  # a folder, but still no checkpoint
    qtbot.mouseClick(widget.use_cohort_button, Qt.LeftButton)
    assert "segmenter checkpoint" in widget.status.text()


def test_widgets_do_not_import_each_other() -> None:
    """Issue 13.18: the matrix dock and Compare talk through the session, with no import cycle."""
    import ast

    folder = MANIFEST.parent / "widgets"

    def imported(name: str) -> set[str]:
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        return {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }

    assert "_compare_widget" not in imported("_matrix_dock")
    assert "_attack_widget" not in imported("_compare_widget")
    assert "_compare_widget" not in imported("_attack_widget")
    # Compare opens the matrix dock through the launcher and uses no other widget's module
    assert not imported("_compare_widget") & {"_matrix_dock", "_study_widget", "_attack_widget"}
    assert not imported("_matrix_dock") & {"_compare_widget", "_study_widget", "_attack_widget"}
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in folder.glob("*.py")}
    assert max(sizes.values()) <= 640, sizes
    assert sizes["_compare_widget.py"] < 600, sizes  # split by concern (issue: modules past ~600 lines)


def test_stored_similarity_metrics_do_not_mix_taps(tmp_path: Path) -> None:
    """``bottleneck`` must not claim the matrices of ``bottleneck+skips`` (shared prefix)."""
    from napari_invert.study.layout import StudyFolder
    from napari_invert.study.results import Experiment
    from napari_invert.widgets._study_data import stored_similarity_metrics

    folder = StudyFolder(tmp_path)
    folder.evaluation_dir.mkdir()
    np.save(folder.evaluation_dir / "similarity_skull_stripped_unet_bottleneck_skips_ssim.npy", np.eye(2))
    np.save(folder.evaluation_dir / "similarity_skull_stripped_unet_bottleneck_correlation.npy", np.eye(2))
    skips = Experiment("skull_stripped", "unet", "bottleneck+skips")
    bottleneck = Experiment("skull_stripped", "unet", "bottleneck")
    assert stored_similarity_metrics(folder, skips) == ["ssim"]
    assert stored_similarity_metrics(folder, bottleneck) == ["correlation"]
