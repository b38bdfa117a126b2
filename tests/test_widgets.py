"""napari plugin: manifest, reader, sample data, Study / Attack / Compare widgets.

GUI tests need a display: pytest-xvfb starts Xvfb automatically when it is installed
(Qt's "offscreen" platform crashes napari when an image layer is added). Run::

    QT_QPA_PLATFORM=xcb pytest tests/test_widgets.py -m gui

They use napari's ``make_napari_viewer`` fixture (napari's pytest plugin, registered by
napari's ``pytest11`` entry point) and pytest-qt's ``qtbot``.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
# torch (and the LLVM inside triton, which torch loads lazily) must come before the first
# OpenGL context: with Mesa's software renderer (llvmpipe, e.g. under Xvfb) loading a
# second LLVM afterwards crashes the process. The napari plugin itself never imports torch
# in the main thread before a worker needs it; this only pins the order for this module.
pytest.importorskip("torch")
import torch._dynamo  # noqa: F401  (loads triton now, before any viewer exists)
from gui_helpers import fake_rank, fake_value, make_gui_study

from napari_invert.study.results import StudyResults

MANIFEST = Path(__file__).resolve().parent.parent / "napari_invert" / "napari.yaml"


def _display_problem() -> str | None:
    """Why GUI tests cannot run here (checked after pytest-xvfb has set ``DISPLAY``)."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        return "Qt's offscreen platform crashes napari when an image layer is added; run under Xvfb"
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display: install Xvfb (pytest-xvfb then starts it) or run under xvfb-run"
    return None


#: Applied with ``@pytest.mark.gui`` to every test that opens a viewer.
needs_display = pytest.mark.skipif(_display_problem() is not None, reason=_display_problem() or "")
WAIT_MS = 60_000


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 subjects, 2 folds, U-Net + SegNet reconstructions; not evaluated."""
    return make_gui_study(tmp_path_factory.mktemp("study") / "study", evaluated=False)


@pytest.fixture(scope="module")
def evaluated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same layout with a fake evaluation (metrics.csv, matrices, deformation maps)."""
    return make_gui_study(tmp_path_factory.mktemp("evaluated") / "study", evaluated=True)


@pytest.fixture
def trainable_dir(tmp_path: Path) -> Path:
    """A study with (untrained) segmenter checkpoints, for the Attack widget."""
    pytest.importorskip("torch")
    return make_gui_study(tmp_path / "study", with_segmenters=True, evaluated=True)


def _errors_since(start: int) -> list[str]:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [
        str(n.message)
        for n in notification_manager.records[start:]
        if n.severity == NotificationSeverity.ERROR
    ]


def _n_records() -> int:
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def _managed(viewer, role: str | None = None) -> list:
    from napari_invert.widgets._layers import META_KEY

    out = [lyr for lyr in viewer.layers if META_KEY in lyr.metadata]
    return [lyr for lyr in out if role is None or lyr.metadata[META_KEY]["role"] == role]


def cell_titles(viewer) -> list[str]:
    from napari_invert.widgets._grid import cell_titles as titles

    return titles(viewer)


def experiment_title(experiment) -> str:
    from napari_invert.widgets._layers import experiment_title as title

    return title(experiment)


def _open_compare(viewer, qtbot, folder: Path):
    from napari_invert.widgets._compare_widget import CompareWidget

    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare, name="Compare")
    assert compare.open(folder) is not None
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view is not None, timeout=WAIT_MS)
    return compare


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
    (data, kwargs, kind), = layers
    assert kind == "image" and kwargs["name"] == results.subject_ids[0]
    np.testing.assert_array_equal(data, results.original("skull_stripped", results.subject_ids[0]))
    assert kwargs["scale"] == pytest.approx(results.spacing)
    labels_path = results.folder.labels("skull_stripped", results.subject_ids[0])
    (labels, _, kind), = get_reader(str(labels_path))(str(labels_path))
    assert kind == "labels" and labels.max() >= 2
    assert get_reader(str(png)) is None


def test_reader_reports_a_broken_study(tmp_path: Path) -> None:
    from napari_invert.widgets._reader import read_study

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "splits.json"):
        (broken / name).write_text("{}", encoding="utf-8")
    (broken / "cohort.json").write_text("{not json", encoding="utf-8")
    start = _n_records()
    assert read_study(str(broken)) == [(None,)]
    assert any("cohort.json" in m for m in _errors_since(start))


def test_lpba40_sample_or_clear_error() -> None:
    from napari_invert.config import default_data_root
    from napari_invert.widgets._sample_data import lpba40_sample

    start = _n_records()
    layers = lpba40_sample()
    if (default_data_root() / "lpba40" / "images" / "S01.nii.gz").is_file():
        assert [kind for _, _, kind in layers] == ["image", "labels"]
        assert layers[0][0].ndim == 3
    else:
        assert layers == [] and _errors_since(start)


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
    start = _n_records()
    open_study_in_viewer(viewer, broken)
    assert len(_errors_since(start)) == 1, _errors_since(start)


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
        start = _n_records()
        assert widget.open(bad) is None
        assert compare.open(bad) is None
        assert len(_errors_since(start)) == 2, bad
    assert "Could not open" in widget.status.text()
    assert compare.study is None and not compare.next_button.isEnabled()
    start = _n_records()
    assert widget.use_cohort(tmp_path / "nope", tmp_path / "segmenter") is None
    assert _errors_since(start)


@pytest.mark.gui
@needs_display
def test_use_cohort_with_empty_fields_says_what_is_missing(make_napari_viewer, qtbot) -> None:
    """Issue 13.14: the button with empty fields shows a message; nothing raises inside Qt."""
    from qtpy.QtCore import Qt

    from napari_invert.widgets._study_widget import StudyWidget

    viewer = make_napari_viewer()
    widget = StudyWidget(viewer)
    start = _n_records()
    qtbot.mouseClick(widget.use_cohort_button, Qt.LeftButton)  # an exception here fails the test
    assert "cohort folder" in widget.status.text() and "field is empty" in widget.status.text()
    assert len(_errors_since(start)) == 1
    widget.cohort_dir.value = "/"  # a folder, but still no checkpoint
    qtbot.mouseClick(widget.use_cohort_button, Qt.LeftButton)
    assert "segmenter checkpoint" in widget.status.text()


@pytest.mark.gui
@needs_display
def test_compare_evaluated_study(make_napari_viewer, qtbot, evaluated_dir: Path) -> None:
    """Switching subjects updates layers and numbers; deformation maps come from evaluation/;
    a click on the similarity matrix shows reconstruction i next to candidate original j."""
    import nibabel as nib
    from matplotlib.backend_bases import MouseEvent

    from napari_invert.study.layout import tap_slug

    viewer = make_napari_viewer()
    compare = _open_compare(viewer, qtbot, evaluated_dir)
    results = StudyResults(evaluated_dir)
    ids, experiments = results.subject_ids, results.experiments()

    def check(index: int) -> None:
        sid = ids[index]
        originals, recons = _managed(viewer, "original"), _managed(viewer, "recon")
        assert len(originals) == 1 and len(recons) == len(experiments)
        np.testing.assert_array_equal(originals[0].data, results.original("skull_stripped", sid))
        for layer in recons:
            exp = layer.metadata["napari_invert"]["experiment"]
            np.testing.assert_array_equal(layer.data, results.recon(exp, sid))
        table = compare.metrics_text()
        for e_index, exp in enumerate(experiments):
            row = table[exp.label]
            assert row["ssim"] == f"{fake_value('ssim', index, e_index):.3f} (#{fake_rank(index, e_index)})"
            assert row["correlation"].startswith(f"{fake_value('correlation', index, e_index):.3f}")
            assert row["deformation"].startswith(f"{fake_value('deformation', index, e_index):.3f}")

    def wait_for(sid: str) -> None:
        qtbot.waitUntil(lambda: not compare.busy and compare.current_view.ref_subject == sid, timeout=WAIT_MS)

    check(0)
    grid = viewer.canvas.grid
    assert grid.enabled and grid.stride == 1 and tuple(grid.shape) == (1, len(experiments) + 1)
    # reconstructions first (experiment order), the original closes the grid
    assert [lyr.metadata["napari_invert"]["role"] for lyr in viewer.layers] == ["recon", "recon", "original"]
    # issue 13.16: every cell is titled with what it shows
    titles = [experiment_title(e) for e in experiments] + [f"{ids[0]} · original"]
    assert cell_titles(viewer) == titles and titles[0] == "SegNet bottleneck+indices"
    compare.next_subject()
    wait_for(ids[1])
    check(1)
    compare.previous_subject()
    wait_for(ids[0])
    compare.previous_subject()  # wraps around
    wait_for(ids[-1])
    check(len(ids) - 1)

    # deformation overlay: the evaluation's maps of the true pairs
    assert compare.overlay_boxes["deformation"].isEnabled()
    compare.set_overlay("deformation", True)
    qtbot.waitUntil(lambda: len(_managed(viewer, "deformation")) == 2, timeout=WAIT_MS)
    assert grid.stride == 2
    layer = _managed(viewer, "deformation")[0]
    exp, sid = layer.metadata["napari_invert"]["experiment"], layer.metadata["napari_invert"]["subject"]
    path = evaluated_dir / "evaluation" / "deformation" / f"{exp.variant}_{exp.arch}_{tap_slug(exp.tap)}"
    np.testing.assert_allclose(layer.data, np.asarray(nib.load(path / f"{sid}.nii.gz").dataobj), rtol=1e-5)
    # issue 13.15: one colour scale for the subject across the grid, with colour bars and its range in mm
    maps = [np.asarray(lyr.data) for lyr in _managed(viewer, "deformation")]
    top = max(float(np.percentile(m, 99.5)) for m in maps)
    for lyr in _managed(viewer, "deformation"):
        assert tuple(lyr.contrast_limits) == pytest.approx((0.0, top), rel=1e-5)
        assert lyr.colorbar.visible
    assert f"{top:.3g} mm" in compare.scale_label.text()
    # no layer name is elided in the layer list
    assert all(len(lyr.name) <= 26 for lyr in viewer.layers), [lyr.name for lyr in viewer.layers]
    compare.set_overlay("deformation", False)

    # similarity matrix dock: stored matrix, click on cell (0, 2)
    dock = compare.show_matrix()
    assert dock is not None
    qtbot.waitUntil(lambda: not dock.busy and dock.similarity is not None, timeout=WAIT_MS)
    sim = dock.similarity
    assert sim.matrix.shape == (3, 3) and sim.source.endswith(".npy")
    dock.canvas.draw()
    x, y = dock.cell_center(0, 2)
    MouseEvent("button_press_event", dock.canvas, x, y, button=1)._process()
    wait_for(sim.columns[2])
    recon, original = _managed(viewer, "recon"), _managed(viewer, "original")
    assert len(recon) == 1 and len(original) == 1
    exp = recon[0].metadata["napari_invert"]["experiment"]
    np.testing.assert_array_equal(recon[0].data, results.recon(exp, sim.rows[0]))
    np.testing.assert_array_equal(original[0].data, results.original(exp.variant, sim.columns[2]))
    assert "candidate" in original[0].name
    assert compare.metrics_text()[exp.label][f"{sim.metric} vs {sim.columns[2]}"] == f"{sim.matrix[0, 2]:.3f}"
    assert cell_titles(viewer) == [
        f"{sim.rows[0]} · {experiment_title(exp)}",
        f"{sim.columns[2]} · candidate for {sim.rows[0]}",
    ]
    compare.set_subject(1)  # back to the subject view
    qtbot.waitUntil(lambda: not compare.busy and len(_managed(viewer, "recon")) == 2, timeout=WAIT_MS)


@pytest.mark.gui
@needs_display
def test_matrix_click_moves_compare_and_next_continues(
    make_napari_viewer, qtbot, evaluated_dir: Path
) -> None:
    """Issue 13.18/19: a click in the matrix moves Compare's subject list, highlight and status;
    Next continues from there; the matrix dock is tabbed with Compare, not squeezed under it."""
    from matplotlib.backend_bases import MouseEvent

    from napari_invert.widgets._state import session_for

    viewer = make_napari_viewer()
    compare = _open_compare(viewer, qtbot, evaluated_dir)
    ids = compare.study.subject_ids
    dock = compare.show_matrix()
    qtbot.waitUntil(lambda: not dock.busy and dock.similarity is not None, timeout=WAIT_MS)
    qt_window = viewer.window._qt_window
    docks = {name: widget.parent() for name, widget in viewer.window.dock_widgets.items()}
    assert docks["Similarity matrix"] in qt_window.tabifiedDockWidgets(docks["Compare"])
    sim = dock.similarity
    dock.canvas.draw()
    x, y = dock.cell_center(2, 0)  # reconstruction of the third subject vs the first original
    MouseEvent("button_press_event", dock.canvas, x, y, button=1)._process()
    qtbot.waitUntil(
        lambda: not compare.busy and compare.current_view.ref_subject == sim.columns[0], timeout=WAIT_MS
    )
    recon_subject = sim.rows[2]
    assert compare.current_subject == recon_subject == ids[2]
    assert compare.subject_list.currentRow() == 2
    assert session_for(viewer).subject == recon_subject
    assert recon_subject in compare.status.text() and sim.columns[0] in compare.status.text()
    assert dock._row_marker is not None and dock._row_marker.get_y() == pytest.approx(2 - 0.5)
    compare.next_subject()  # continues after the clicked row, wrapping around
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view.ref_subject == ids[0], timeout=WAIT_MS)
    assert dock._row_marker.get_y() == pytest.approx(0 - 0.5)
    assert len(_managed(viewer, "recon")) == 2  # back to the subject view


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
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in folder.glob("*.py")}
    assert max(sizes.values()) <= 640, sizes


@pytest.mark.gui
@needs_display
def test_matrix_of_40_subjects_is_labelled(make_napari_viewer, evaluated_dir: Path) -> None:
    """Issue 13.19: a 40x40 matrix shows every subject's label on both axes."""
    from napari_invert.widgets._matrix_dock import SimilarityMatrixWidget
    from napari_invert.widgets._study_data import SimilarityMatrix

    viewer = make_napari_viewer()
    dock = SimilarityMatrixWidget(viewer)
    ids = tuple(f"S{i:02d}" for i in range(1, 41))
    matrix = np.random.default_rng(0).uniform(size=(40, 40))
    experiment = StudyResults(evaluated_dir).experiments()[0]
    dock._show(experiment, SimilarityMatrix(matrix, ids, ids, "correlation", "test"), None)
    dock.canvas.draw()
    assert [t.get_text() for t in dock.axes.get_xticklabels()] == list(ids)
    assert [t.get_text() for t in dock.axes.get_yticklabels()] == list(ids)


@pytest.mark.gui
@needs_display
def test_compare_unevaluated_study_and_overlays(make_napari_viewer, qtbot, study_dir: Path) -> None:
    """No evaluation/: metrics and the matrix are computed on demand via the core, the
    deformation overlay is disabled with its reason, and overlay toggles add/remove layers."""
    from napari_invert.metrics.correlation import pearson_correlation

    viewer = make_napari_viewer()
    compare = _open_compare(viewer, qtbot, study_dir)
    n_exp = len(compare.selected_experiments())
    assert n_exp == 2
    view = compare.current_view
    table = compare.metrics_text()
    r = pearson_correlation(view.recons[0], view.reference, mask=view.mask)
    assert float(table[view.cells[0].experiment.label]["correlation"]) == pytest.approx(r, abs=1e-3)
    assert -1.0 <= float(table[view.cells[0].experiment.label]["ssim"]) <= 1.0

    # issue 13.22: the config turns deformation off, yet a registration can be computed here
    box = compare.overlay_boxes["deformation"]
    assert box.isEnabled() and "on demand" in compare.deformation_note.text()

    compare.set_overlay("ssim", True)
    qtbot.waitUntil(lambda: len(_managed(viewer, "ssim")) == n_exp, timeout=WAIT_MS)
    assert viewer.canvas.grid.stride == 2
    ssim = _managed(viewer, "ssim")[0]
    assert ssim.data.shape == view.reference.shape and float(ssim.data.max()) <= 1.0 + 1e-6
    compare.set_overlay("diff", True)
    qtbot.waitUntil(lambda: len(_managed(viewer, "diff")) == n_exp, timeout=WAIT_MS)
    assert viewer.canvas.grid.stride == 3
    roles = [lyr.metadata["napari_invert"]["role"] for lyr in viewer.layers]
    assert roles == ["recon", "ssim", "diff"] * n_exp + ["original"]  # one grid cell per reconstruction
    diff = _managed(viewer, "diff")[0]
    cell = next(
        i for i, c in enumerate(view.cells) if c.experiment == diff.metadata["napari_invert"]["experiment"]
    )
    np.testing.assert_allclose(diff.data, np.abs(view.recons[cell] - view.reference))

    compare.next_subject()  # overlays follow the subject
    qtbot.waitUntil(
        lambda: (
            not compare.busy
            and len(_managed(viewer, "diff")) == n_exp
            and _managed(viewer, "diff")[0].metadata["napari_invert"]["subject"] == compare.current_subject
        ),
        timeout=WAIT_MS,
    )
    compare.set_overlay("ssim", False)
    compare.set_overlay("diff", False)
    assert _managed(viewer, "ssim") == [] and _managed(viewer, "diff") == []
    assert viewer.canvas.grid.stride == 1

    dock = compare.show_matrix()
    qtbot.waitUntil(lambda: not dock.busy and dock.similarity is not None, timeout=WAIT_MS)
    sim = dock.similarity
    assert sim.source == "computed on demand" and sim.metric == "correlation"
    # the reconstructions are blurred originals: each row's best candidate is the true one
    assert all(np.argmax(sim.matrix[i]) == sim.true_column(i) for i in range(len(sim.rows)))


@pytest.mark.gui
@needs_display
def test_deformation_on_demand_progress_cancel_and_in_place_navigation(
    make_napari_viewer, qtbot, tmp_path: Path
) -> None:
    """Issue 13.17/22: deformation is offered although the config turns it off; it runs off the
    main thread (ANTs in a separate process) with a count, progress and Cancel; maps are cached
    on disk; navigating with overlays on updates the same layers in place."""
    folder = make_gui_study(tmp_path / "study", deformation=False)
    cache_dir = folder / "evaluation" / "cache" / "deformation"
    viewer = make_napari_viewer()
    compare = _open_compare(viewer, qtbot, folder)
    assert compare.overlay_boxes["deformation"].isEnabled()

    compare.set_overlay("deformation", True)  # 2 pairs (one per reconstruction), then Cancel
    assert compare.overlay_cancel.isEnabled() and compare.overlay_progress.maximum() == 2
    compare.cancel_overlays()
    qtbot.waitUntil(lambda: not compare.busy, timeout=WAIT_MS)
    assert "Cancelled after" in compare.status.text() and "/2 maps" in compare.status.text()
    assert not compare.overlay_boxes["deformation"].isChecked() and not compare.overlay_cancel.isEnabled()
    assert _managed(viewer, "deformation") == []
    n_cached = len(list(cache_dir.glob("*.nii.gz"))) if cache_dir.is_dir() else 0
    assert n_cached <= 1  # at most the pair that was running

    compare.set_overlay("deformation", True)
    qtbot.waitUntil(lambda: len(_managed(viewer, "deformation")) == 2, timeout=WAIT_MS)
    assert compare.overlay_progress.value() == compare.overlay_progress.maximum() == 2 - n_cached
    limits = {tuple(lyr.contrast_limits) for lyr in _managed(viewer, "deformation")}
    assert len(limits) == 1 and "mm" in compare.scale_label.text()
    for layer in _managed(viewer, "deformation"):  # |displacement| in mm: finite, >= 0, not all 0
        data = np.asarray(layer.data)
        assert np.isfinite(data).all() and data.min() >= 0 and data.max() > 0
    assert len(list(cache_dir.glob("*.nii.gz"))) == 2
    compare.set_overlay("deformation", False)
    assert _managed(viewer, "deformation") == []

    compare.set_overlay("diff", True)
    qtbot.waitUntil(lambda: len(_managed(viewer, "diff")) == 2, timeout=WAIT_MS)
    layers = list(viewer.layers)
    compare.next_subject()
    qtbot.waitUntil(
        lambda: (
            not compare.busy
            and all(lyr.visible for lyr in _managed(viewer, "diff"))
            and _managed(viewer, "diff")[0].metadata["napari_invert"]["subject"] == compare.current_subject
        ),
        timeout=WAIT_MS,
    )
    assert list(viewer.layers) == layers  # the same layer objects, in the same order: data set in place
    view = compare.current_view
    np.testing.assert_allclose(_managed(viewer, "diff")[0].data, np.abs(view.recons[0] - view.reference))


def _cell_spreads(image: np.ndarray, shape: tuple[int, int]) -> list[float]:
    """Standard deviation of the grey values inside each grid cell of a screenshot."""
    rows, cols = shape
    h, w = image.shape[:2]
    grey = image[..., :3].astype(float).mean(axis=-1)
    return [
        float(grey[r * h // rows : (r + 1) * h // rows, c * w // cols : (c + 1) * w // cols].std())
        for r in range(rows)
        for c in range(cols)
    ]


@pytest.mark.gui
@needs_display
@pytest.mark.parametrize("ndisplay", [2, 3])
def test_grid_screenshot_and_shortcuts(make_napari_viewer, qtbot, evaluated_dir: Path, ndisplay: int) -> None:
    """Every grid cell shows content (2D slice and 3D rendering); PageDown/PageUp switch subjects."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    compare = _open_compare(viewer, qtbot, evaluated_dir)
    ids = compare.study.subject_ids
    viewer.dims.ndisplay = ndisplay
    compare.set_overlay("ssim", True)
    qtbot.waitUntil(lambda: len(_managed(viewer, "ssim")) == 2, timeout=WAIT_MS)
    viewer.reset_view()
    qtbot.wait(50)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    shape = tuple(viewer.canvas.grid.shape)
    assert shape == (1, 3)
    spreads = _cell_spreads(shot, shape)
    assert all(s > 5.0 for s in spreads), spreads

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key_PageDown)
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view.ref_subject == ids[1], timeout=WAIT_MS)
    qtbot.keyClick(canvas, Qt.Key_PageUp)
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view.ref_subject == ids[0], timeout=WAIT_MS)
    assert viewer.dims.ndisplay == ndisplay and len(_managed(viewer, "ssim")) == 2


# -- attack ---------------------------------------------------------------------------------
def _study_files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.gui
@needs_display
def test_attack_training_keeps_the_study_consistent(make_napari_viewer, qtbot, trainable_dir: Path) -> None:
    """Issue 13.4/19: a plugin-trained decoder, its curve and its reconstructions are saved under
    ``<tap>/plugin/``; the study's files are untouched; a cancelled run writes no curve; the
    reconstructions join the Compare grid (no loose layers), labelled, with their own scores."""
    from napari_invert.checkpoint import checkpoint_exists
    from napari_invert.metrics.correlation import pearson_correlation
    from napari_invert.widgets._attack_widget import AttackWidget
    from napari_invert.widgets._layers import META_KEY
    from napari_invert.widgets._plugin_results import PluginExperiment

    viewer = make_napari_viewer()
    compare = _open_compare(viewer, qtbot, trainable_dir)
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
    attack.steps.setValue(100_000)
    attack.batch_size.setValue(1)
    attack.base_filters.setValue(2)
    attack.device_combo.setCurrentText("cpu")
    assert attack.start_training()
    assert attack.cancel_button.isEnabled() and not attack.train_button.isEnabled()
    qtbot.waitUntil(lambda: attack.progress.value() >= 2, timeout=WAIT_MS)
    attack.cancel()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    outcome = attack.last_outcome
    assert outcome is not None and outcome.cancelled and 2 <= outcome.steps_done < 100_000
    assert not checkpoint_exists(stem) and not curve.exists()
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
    start = _n_records()
    assert not attack.start_training()
    assert _errors_since(start)
    # the saved decoder can be loaded again to reconstruct the private subjects
    assert attack.load_decoder()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    assert set(attack.last_outcome.recons) == set(fold0["private"])
    assert all(META_KEY in lyr.metadata for lyr in viewer.layers)
    # a bad decoder file: a message in the viewer, nothing raised into Qt
    bad = trainable_dir / "not_a_decoder.json"
    bad.write_text("{}", encoding="utf-8")
    attack.decoder_file.value = bad
    start = _n_records()
    assert attack.load_decoder()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    assert "failed" in attack.status.text() and _errors_since(start)


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
    start = _n_records()
    assert not attack.start_training() and not attack.running
    assert "trained_on" in attack.status.text() and trained_on[0] in attack.status.text()
    assert _errors_since(start)
    attack.attack_list.item(victim_row).setCheckState(Qt.Unchecked)
    assert attack.start_training(), attack.status.text()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    outcome = attack.last_outcome
    assert outcome is not None and outcome.saved is not None, attack.status.text()
    assert checkpoint_exists(attack.decoder_stem()) and attack.decoder_stem().parent == segmenter.parent
    assert set(outcome.recons) == set(trained_on)


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
