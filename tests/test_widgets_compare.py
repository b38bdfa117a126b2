"""napari plugin: the Compare widget and its similarity-matrix dock (grid, overlays, navigation).

Run ``QT_API=pyqt6 pytest tests/test_widgets_compare.py`` (pytest-xvfb provides the display).
The study folders (``study_dir``, ``evaluated_dir``) come from ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gui_helpers import fake_rank, fake_value, make_gui_study
from widget_helpers import WAIT_MS, cell_titles, experiment_title, managed, needs_display, open_compare

from napari_invert.study.results import StudyResults


@pytest.mark.gui
@needs_display
def test_compare_evaluated_study(make_napari_viewer, qtbot, evaluated_dir: Path) -> None:
    """Switching subjects updates layers and numbers; deformation maps come from evaluation/;
    a click on the similarity matrix shows reconstruction i next to candidate original j."""
    import nibabel as nib
    from matplotlib.backend_bases import MouseEvent

    from napari_invert.study.layout import tap_slug

    viewer = make_napari_viewer()
    compare = open_compare(viewer, qtbot, evaluated_dir)
    results = StudyResults(evaluated_dir)
    ids, experiments = results.subject_ids, results.experiments()

    def check(index: int) -> None:
        sid = ids[index]
        originals, recons = managed(viewer, "original"), managed(viewer, "recon")
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
    qtbot.waitUntil(lambda: len(managed(viewer, "deformation")) == 2, timeout=WAIT_MS)
    assert grid.stride == 2
    layer = managed(viewer, "deformation")[0]
    exp, sid = layer.metadata["napari_invert"]["experiment"], layer.metadata["napari_invert"]["subject"]
    path = evaluated_dir / "evaluation" / "deformation" / f"{exp.variant}_{exp.arch}_{tap_slug(exp.tap)}"
    np.testing.assert_allclose(layer.data, np.asarray(nib.load(path / f"{sid}.nii.gz").dataobj), rtol=1e-5)
    # issue 13.15: one colour scale for the subject across the grid, with colour bars and its range in mm
    maps = [np.asarray(lyr.data) for lyr in managed(viewer, "deformation")]
    top = max(float(np.percentile(m, 99.5)) for m in maps)
    for lyr in managed(viewer, "deformation"):
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
    recon, original = managed(viewer, "recon"), managed(viewer, "original")
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
    qtbot.waitUntil(lambda: not compare.busy and len(managed(viewer, "recon")) == 2, timeout=WAIT_MS)


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
    compare = open_compare(viewer, qtbot, evaluated_dir)
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
    assert len(managed(viewer, "recon")) == 2  # back to the subject view


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
    compare = open_compare(viewer, qtbot, study_dir)
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
    qtbot.waitUntil(lambda: len(managed(viewer, "ssim")) == n_exp, timeout=WAIT_MS)
    assert viewer.canvas.grid.stride == 2
    ssim = managed(viewer, "ssim")[0]
    assert ssim.data.shape == view.reference.shape and float(ssim.data.max()) <= 1.0 + 1e-6
    compare.set_overlay("diff", True)
    qtbot.waitUntil(lambda: len(managed(viewer, "diff")) == n_exp, timeout=WAIT_MS)
    assert viewer.canvas.grid.stride == 3
    roles = [lyr.metadata["napari_invert"]["role"] for lyr in viewer.layers]
    assert roles == ["recon", "ssim", "diff"] * n_exp + ["original"]  # one grid cell per reconstruction
    diff = managed(viewer, "diff")[0]
    cell = next(
        i for i, c in enumerate(view.cells) if c.experiment == diff.metadata["napari_invert"]["experiment"]
    )
    np.testing.assert_allclose(diff.data, np.abs(view.recons[cell] - view.reference))

    compare.next_subject()  # overlays follow the subject
    qtbot.waitUntil(
        lambda: (
            not compare.busy
            and len(managed(viewer, "diff")) == n_exp
            and managed(viewer, "diff")[0].metadata["napari_invert"]["subject"] == compare.current_subject
        ),
        timeout=WAIT_MS,
    )
    compare.set_overlay("ssim", False)
    compare.set_overlay("diff", False)
    assert managed(viewer, "ssim") == [] and managed(viewer, "diff") == []
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
    compare = open_compare(viewer, qtbot, folder)
    assert compare.overlay_boxes["deformation"].isEnabled()

    compare.set_overlay("deformation", True)  # 2 pairs (one per reconstruction), then Cancel
    assert compare.overlay_cancel.isEnabled() and compare.overlay_progress.maximum() == 2
    compare.cancel_overlays()
    qtbot.waitUntil(lambda: not compare.busy, timeout=WAIT_MS)
    assert "Cancelled after" in compare.status.text() and "/2 maps" in compare.status.text()
    assert not compare.overlay_boxes["deformation"].isChecked() and not compare.overlay_cancel.isEnabled()
    assert managed(viewer, "deformation") == []
    n_cached = len(list(cache_dir.glob("*.nii.gz"))) if cache_dir.is_dir() else 0
    assert n_cached <= 1  # at most the pair that was running

    compare.set_overlay("deformation", True)
    qtbot.waitUntil(lambda: len(managed(viewer, "deformation")) == 2, timeout=WAIT_MS)
    assert compare.overlay_progress.value() == compare.overlay_progress.maximum() == 2 - n_cached
    limits = {tuple(lyr.contrast_limits) for lyr in managed(viewer, "deformation")}
    assert len(limits) == 1 and "mm" in compare.scale_label.text()
    for layer in managed(viewer, "deformation"):  # |displacement| in mm: finite, >= 0, not all 0
        data = np.asarray(layer.data)
        assert np.isfinite(data).all() and data.min() >= 0 and data.max() > 0
    assert len(list(cache_dir.glob("*.nii.gz"))) == 2
    compare.set_overlay("deformation", False)
    assert managed(viewer, "deformation") == []

    compare.set_overlay("diff", True)
    qtbot.waitUntil(lambda: len(managed(viewer, "diff")) == 2, timeout=WAIT_MS)
    layers = list(viewer.layers)
    compare.next_subject()
    qtbot.waitUntil(
        lambda: (
            not compare.busy
            and all(lyr.visible for lyr in managed(viewer, "diff"))
            and managed(viewer, "diff")[0].metadata["napari_invert"]["subject"] == compare.current_subject
        ),
        timeout=WAIT_MS,
    )
    assert list(viewer.layers) == layers  # the same layer objects, in the same order: data set in place
    view = compare.current_view
    np.testing.assert_allclose(managed(viewer, "diff")[0].data, np.abs(view.recons[0] - view.reference))


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
    compare = open_compare(viewer, qtbot, evaluated_dir)
    ids = compare.study.subject_ids
    viewer.dims.ndisplay = ndisplay
    compare.set_overlay("ssim", True)
    qtbot.waitUntil(lambda: len(managed(viewer, "ssim")) == 2, timeout=WAIT_MS)
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
    assert viewer.dims.ndisplay == ndisplay and len(managed(viewer, "ssim")) == 2


def test_recon_labels_name_the_victim() -> None:
    """``segnet@untrained`` is listed as "SegNet — untrained victim (control)", a defended
    victim by its condition, a plugin decoder keeps its note."""
    from napari_invert.study.results import Experiment
    from napari_invert.threat_models import ArchKey, arch_title
    from napari_invert.widgets._plugin_results import PluginExperiment
    from napari_invert.widgets._recon_list import recon_label

    assert arch_title("segnet@untrained") == "SegNet — untrained victim (control)"
    assert arch_title("unet") == "U-Net"
    assert arch_title("user@untrained") == "user — untrained victim (control)"
    assert ArchKey.parse("unet@noise-0.5").title == "U-Net — noise-0.5 victim"
    control = Experiment("skull_stripped", "segnet@untrained", "bottleneck+indices")
    assert recon_label(control) == "SegNet — untrained victim (control), bottleneck+indices (skull_stripped)"
    trained = Experiment("skull_stripped", "unet", "bottleneck+skips")
    assert recon_label(trained) == "U-Net bottleneck+skips (skull_stripped)"
    plugin = PluginExperiment("skull_stripped", "unet@untrained", "bottleneck+skips")
    assert recon_label(plugin) == (
        "U-Net — untrained victim (control), bottleneck+skips (plugin decoder, skull_stripped)"
    )
