"""Study and Compare widgets: threat models, controls, membership and convergence (issues 10, 15).

Real small study folders (tests/gui_helpers.make_gui_study) with, written in tmp_path, the
files the evaluation writes: the untrained-victim control's reconstructions
(``<arch>@untrained``), ``evaluation/controls/controls.json``, a pooled membership result and
convergence records. Run with ``QT_API=pyqt6`` under Xvfb (pytest-xvfb).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("torch")
import torch
import torch._dynamo
from gui_helpers import make_gui_study

from napari_invert._io import write_json_atomic
from napari_invert.config import load_config
from napari_invert.data.nifti import save_nifti
from napari_invert.study.layout import StudyFolder
from napari_invert.study.results import StudyResults

needs_display = pytest.mark.skipif(
    sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
    reason="no display: install Xvfb (pytest-xvfb starts it)",
)
VARIANT = "skull_stripped"
TAP = "bottleneck+skips"


def _tree_rows(tree) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """``{top-level text: (detail, [(child text, child detail), ...])}``."""
    out = {}
    for i in range(tree.topLevelItemCount()):
        top = tree.topLevelItem(i)
        children = [(top.child(j).text(0), top.child(j).text(1)) for j in range(top.childCount())]
        out[top.text(0)] = (top.text(1), children)
    return out


def _section(rows: dict, prefix: str) -> tuple[str, list[tuple[str, str]]]:
    matches = [k for k in rows if k.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(rows))
    return rows[matches[0]]


def _add_untrained_control(root: Path) -> None:
    """Reconstructions of the untrained U-Net: every private subject as its fold's prior."""
    results = StudyResults(root)
    folder = StudyFolder(root)
    for fold in results.splits["folds"]:
        k = int(fold["fold"])
        prior = results.prior(VARIANT, k)
        for sid in fold["private"]:
            save_nifti(folder.recon(VARIANT, k, "unet@untrained", TAP, sid), prior, np.diag([2.0, 2, 2, 1]))


def _controls_doc() -> dict:
    def group(n: int, top1: int) -> dict:
        return {"n": n, "top1": top1, "mean_rank": 1.5, "mean_score": 0.6, "mean_gain_over_prior": 0.1}

    def summary(arch: str, condition: str, members: dict, nonmembers: dict) -> dict:
        return {
            "variant": VARIANT,
            "arch": arch,
            "condition": condition,
            "tap": TAP,
            "metric": "ssim",
            "n_candidates": 3,
            "beyond_paper": False,
            "threat_model": "feature inversion",
            "members": members,
            "nonmembers": nonmembers,
        }

    return {
        "threat_model": "feature inversion",
        "metric": "ssim",
        "summaries": [
            summary("unet", "trained", group(3, 3), group(3, 2)),
            summary("unet", "untrained", group(3, 1), {"n": 0}),
        ],
        "verdicts": [],
    }


def _membership_doc() -> dict:
    return {
        "threat_model": "training-data leakage",
        "variant": VARIANT,
        "arch": "unet",
        "folds": [0, 1],
        "n_members": 3,
        "n_nonmembers": 3,
        "attacks": {"loss": {"auc": 0.75, "auc_ci": [0.55, 0.9], "auc_p_value": 0.1}},
        "controls": {"untrained_victim": {"attacks": {"loss": {"auc": 0.5, "auc_ci": [0.3, 0.7]}}}},
    }


def _victim_record(steps: int, stop: str, best: float, baseline: float, segments: bool) -> dict:
    return {
        "kind": "convergence",
        "label": "victim",
        "status": "finished",
        "stop_reason": stop,
        "steps_run": steps,
        "max_steps": 200,
        "seconds": 12.0,
        "metric": "dice",
        "higher_is_better": True,
        "best_step": steps,
        "best_score": best,
        "baseline_score": baseline,
        "baseline": "majority label",
        "validation_source": "held_out",
        "segments": segments,
        "segments_reason": "" if segments else "best Dice below min_validation_dice",
    }


@pytest.fixture
def control_study(tmp_path: Path) -> Path:
    """3 subjects, 2 folds, U-Net + SegNet, the untrained U-Net, controls and membership."""
    root = make_gui_study(tmp_path / "study", evaluated=True)
    _add_untrained_control(root)
    folder = StudyFolder(root)
    write_json_atomic(folder.evaluation_dir / "controls" / "controls.json", _controls_doc())
    write_json_atomic(folder.membership_pooled_json(VARIANT, "unet"), _membership_doc())
    return root


def _write_convergence(root: Path, fold0_segments: bool) -> None:
    folder = StudyFolder(root)
    write_json_atomic(
        folder.segmenter_convergence(VARIANT, 0, "unet"),
        _victim_record(60, "plateau", 0.81 if fold0_segments else 0.12, 0.10, fold0_segments),
    )
    write_json_atomic(
        folder.segmenter_convergence(VARIANT, 1, "unet"), _victim_record(200, "max_steps", 0.78, 0.1, True)
    )


@needs_display
def test_study_tree_names_threat_models_controls_and_membership(
    make_napari_viewer, control_study: Path
) -> None:
    from napari_invert.widgets._study_widget import StudyWidget

    widget = StudyWidget(make_napari_viewer())
    assert widget.open(control_study) is not None
    rows = _tree_rows(widget.tree)
    everything = [
        t for top, (d, children) in rows.items() for t in (top, d, *[c for pair in children for c in pair])
    ]
    assert not any("@untrained" in t for t in everything), "the control is named, not its directory"

    _, archs = _section(rows, "Architectures")
    # the control carries the network's display name (ArchKey.title / ARCH_NAMES), not "unet"
    assert ("U-Net: untrained victim (control) (skull_stripped)", "segmenter in 0/2 folds") in archs
    _, recons = _section(rows, "Reconstructions — feature inversion")
    assert "U-Net: untrained victim (control) bottleneck+skips (skull_stripped)" in [t for t, _ in recons]

    _, controls = _section(rows, "Controls — feature inversion")
    assert controls == [
        (
            "U-Net bottleneck+skips (skull_stripped)",
            "top-1 members 3/3, non-members 2/3; untrained victim (control) 1/3",
        )
    ]
    _, membership = _section(rows, "Membership inference — training-data leakage")
    assert membership == [
        (
            "U-Net (skull_stripped)",
            "loss AUC 0.75 [0.55, 0.90], untrained victim (control) 0.50 "
            "(3 members vs 3 non-members; chance 0.5)",
        )
    ]


@needs_display
def test_study_tree_says_when_controls_and_membership_are_missing(make_napari_viewer, tmp_path: Path) -> None:
    from napari_invert.widgets._study_widget import StudyWidget

    widget = StudyWidget(make_napari_viewer())
    widget.open(make_gui_study(tmp_path / "plain"))
    rows = _tree_rows(widget.tree)
    assert _section(rows, "Controls — feature inversion") == (
        "not evaluated (napari-invert controls STUDY)",
        [],
    )
    assert _section(rows, "Membership inference — training-data leakage") == ("no pooled result", [])
    assert _section(rows, "Convergence (0 networks)") == ("no convergence records", [])
    assert widget.victim_warning.isHidden()


@needs_display
def test_compare_score_panel_names_threat_model_and_control(qtbot) -> None:
    from qtpy.QtWidgets import QTableWidget

    from napari_invert.study.results import Experiment
    from napari_invert.widgets._scores import (
        STORED,
        ScoreColumn,
        fill_table,
        pair_column,
        pair_title,
        title_for,
    )
    from napari_invert.widgets._study_data import MetricValue

    trained = ScoreColumn("U-Net bottleneck (skull_stripped)", STORED, {"ssim": MetricValue(0.8, 1)})
    control = pair_column(Experiment(VARIANT, "unet@untrained", "bottleneck"), {"ssim": 0.3})
    assert control.control and not trained.control
    assert title_for("S01", [trained]).startswith(
        "S01 — feature inversion: metrics from evaluation/metrics.csv"
    )
    assert pair_title("S01", "S02") == "Reconstruction of S01 vs original of S02 — feature inversion"

    table = QTableWidget()
    qtbot.addWidget(table)
    fill_table(table, [trained, control])
    headers = [table.horizontalHeaderItem(c).text() for c in range(2)]
    assert "untrained victim (control)" in headers[1] and "@untrained" not in headers[1]
    assert "untrained" not in headers[0]
    assert "feature inversion" in table.horizontalHeaderItem(0).toolTip()
    assert "untrained victim (control), feature inversion" in table.horizontalHeaderItem(1).toolTip()


@needs_display
def test_study_tree_lists_convergence_and_warns_once_when_victims_do_not_segment(
    make_napari_viewer, control_study: Path
) -> None:
    from napari.utils.notifications import notification_manager

    from napari_invert.widgets._study_widget import StudyWidget

    _write_convergence(control_study, fold0_segments=False)
    widget = StudyWidget(make_napari_viewer())
    before = len(notification_manager.records)
    widget.open(control_study)
    widget.open(control_study)  # opening again must not warn again
    rows = _tree_rows(widget.tree)
    _, conv = _section(rows, "Convergence (2 networks)")
    assert conv == [
        (
            "skull_stripped fold 0 U-Net victim",
            "60/200 steps, stopped: plateau; best dice 0.120 vs majority label 0.100 — DOES NOT SEGMENT",
        ),
        (
            "skull_stripped fold 1 U-Net victim",
            "200/200 steps, stopped: max_steps; best dice 0.780 vs majority label 0.100",
        ),
    ]
    assert not widget.victim_warning.isHidden()
    text = widget.victim_warning.text()
    assert "1 of 2 victim segmenters do not segment" in text
    assert "skull_stripped fold 0 unet: best Dice 0.120 vs baseline 0.100" in text
    warnings = [r for r in notification_manager.records[before:] if "do not segment" in str(r.message)]
    assert len(warnings) == 1


@needs_display
def test_no_warning_when_every_victim_segments(make_napari_viewer, control_study: Path) -> None:
    from napari_invert.widgets._study_widget import StudyWidget

    _write_convergence(control_study, fold0_segments=True)
    widget = StudyWidget(make_napari_viewer())
    widget.open(control_study)
    assert widget.victim_warning.isHidden()
    _, conv = _section(_tree_rows(widget.tree), "Convergence (2 networks)")
    assert not any("DOES NOT SEGMENT" in d for _, d in conv)


@needs_display
def test_a_memorised_victim_is_named_in_the_tree_and_the_warning(
    make_napari_viewer, control_study: Path
) -> None:
    """Judged on 5 unseen subjects (no better than the atlas) while fitting its training subjects:
    the tree row shows the unseen Dice and "(memorised)", the warning says what that means."""
    from napari_invert.study.unseen_test import TEST_FORMAT, attach_unseen_test, failure_mode, unseen_verdict
    from napari_invert.widgets._study_widget import StudyWidget

    _write_convergence(control_study, fold0_segments=True)  # validation says it segments
    ids = ["U1", "U2", "U3", "U4", "U5"]
    victim, atlas = [0.61, 0.62, 0.60, 0.61, 0.61], [0.6] * 5
    verdict = unseen_verdict(victim, atlas, 0.3, 0.05)
    block = {"format": TEST_FORMAT, "subjects": ids, "dice": victim, "baseline_dice": atlas, **verdict}
    block.update(
        mean_fitted_dice=0.8, failure=failure_mode(verdict["segments"], 0.8, verdict["mean_dice"], 0.05)
    )
    attach_unseen_test(StudyFolder(control_study).segmenter_convergence(VARIANT, 0, "unet"), block)
    widget = StudyWidget(make_napari_viewer())
    widget.open(control_study)
    _, conv = _section(_tree_rows(widget.tree), "Convergence (2 networks)")
    assert conv[0][1].endswith(
        "unseen Dice 0.610 vs baseline 0.600 (5 subjects) — DOES NOT SEGMENT (memorised)"
    ), conv[0][1]
    assert not widget.victim_warning.isHidden()
    assert "Memorised (fold 0 unet)" in widget.victim_warning.text()


# -- issue 12 item 4: the user's own segmenter (audit config) --------------------------------
def _write_audit_yaml(tmp_path: Path, trained_on: list[str]) -> Path:
    """A MONAI U-Net (seeded, weights as safetensors) and an audit config naming it."""
    import yaml
    from monai.networks.nets import UNet
    from safetensors.torch import save_file

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16], "strides": [2, 2]}
    torch.manual_seed(0)
    net = UNet(**args)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "unet.safetensors"))
    config = {
        "name": "mine",
        "model": {"kind": "monai", "network": "UNet", "args": args, "weights": "unet.safetensors"},
        "cohort": {"kind": "demo", "n_subjects": 3},
        "subjects": {"trained_on": trained_on},
    }
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_audit_model_taps_and_default_attack_set(tmp_path: Path) -> None:
    from napari_invert.widgets._audit_source import load_audit_model

    cohort = make_gui_study(tmp_path / "cohort")  # its cohort.json lists S01..S03
    model = load_audit_model(_write_audit_yaml(tmp_path, ["S01"]), cohort)
    entries = [e for e, _ in model.choices]
    roles = model.discovery.roles
    assert entries[:2] == ["bottleneck+skips", "bottleneck"]
    assert dict(model.choices)["bottleneck"] == f"role: {roles['bottleneck']}"
    assert set(model.discovery.layer_names) <= set(entries)  # every layer is offered too
    assert model.trained_on == ["S01"] and model.attack == ["S02", "S03"]
    out = model.adapter.forward(torch.zeros(1, 1, 16, 16, 16))
    assert tuple(out.shape) == (1, 3, 16, 16, 16)

    no_cohort = load_audit_model(tmp_path / "audit.yaml")
    assert no_cohort.attack is None and "cohort" in no_cohort.attack_note


@needs_display
def test_study_widget_discovers_taps_of_an_audit_config(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    from napari_invert.widgets._state import session_for
    from napari_invert.widgets._study_widget import StudyWidget

    cohort = make_gui_study(tmp_path / "cohort")
    widget = StudyWidget(make_napari_viewer())
    box = widget.audit_box
    widget.cohort_dir.value = cohort
    box.config_file.value = _write_audit_yaml(tmp_path, ["S02"])
    box.discover_button.click()
    qtbot.waitUntil(lambda: not box.busy, timeout=60_000)
    assert box.model is not None, box.info.text()
    assert box.tap_choice.isEnabled() and box.tap == "bottleneck+skips"
    assert box.tap_choice.count() == len(box.model.choices)
    assert "Attack set (2 of 3 cohort subjects, none in trained_on): S01, S03" in box.info.text()
    session = session_for(widget._viewer)  # published for the Attack side, with the chosen tap
    assert session.audit_model is box.model and session.audit_tap == "bottleneck+skips"
    box.tap_choice.setCurrentIndex(1)
    assert session.audit_tap == "bottleneck"

    (tmp_path / "bad.yaml").write_text("name: x\n")  # no model: block -> said, not raised
    box.config_file.value = tmp_path / "bad.yaml"
    box.discover_button.click()
    qtbot.waitUntil(lambda: not box.busy, timeout=60_000)
    assert box.model is None and "needs a 'model:' block" in box.info.text()
    assert session.audit_model is None

    # a model file alone, with its kind (no YAML): a TorchScript export of a U-Net
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8, 16], strides=[2, 2]).eval()
    torch.jit.trace(net, torch.zeros(1, 1, 16, 16, 16)).save(str(tmp_path / "model.ts"))
    box.source_kind.setCurrentIndex(box.source_kind.findData("torchscript"))
    box.config_file.value = tmp_path / "model.ts"
    box.discover_button.click()
    qtbot.waitUntil(lambda: not box.busy, timeout=60_000)
    assert box.model is not None, box.info.text()
    assert box.model.adapter.discovery.roles.keys() >= {"bottleneck", "level0"}
    assert box.tap == "bottleneck+skips" and session.audit_model is box.model
    assert box.model.attack is None  # no subjects block: the attack set is not resolved
    box.source_kind.setCurrentIndex(box.source_kind.findData("bundle"))
    assert box.config_file.mode.value == "d"


def test_architectures_of_an_audit_folder_come_from_disk(tmp_path: Path) -> None:
    from napari_invert.widgets._study_data import architectures_of

    root = make_gui_study(tmp_path / "audit")  # config.yaml lists segnet and unet
    results = StudyResults(root)
    config = load_config(StudyFolder(root).config_path)
    assert architectures_of(results, config) == list(config.segmenter.architectures)
    for fold in (0, 1):
        shutil.rmtree(root / VARIANT / f"fold{fold}" / "segnet")
        for arch in ("user", "user@untrained"):
            (root / VARIANT / f"fold{fold}" / arch).mkdir()
    assert architectures_of(results, config) == ["unet", "user", "user@untrained"]


@needs_display
def test_compare_widget_titles_scores_with_threat_model_and_names_the_control(
    make_napari_viewer, qtbot, control_study: Path
) -> None:
    from napari_invert.widgets._compare_widget import CompareWidget

    viewer = make_napari_viewer()
    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare, name="Compare")
    assert compare.open(control_study) is not None
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view is not None, timeout=60_000)
    assert "untrained" in {e.arch.partition("@")[2] for e in compare.selected_experiments()}
    assert "— feature inversion: metrics" in compare.metrics_title.text()
    table = compare.metrics_table
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert sum("untrained victim (control)" in h for h in headers) == 1, headers
    assert not any("@untrained" in h for h in headers)
    names = [layer.name for layer in viewer.layers]
    assert sum("untrained victim (control)" in n for n in names) == 1, names
    assert not any("@untrained" in n for n in names)
    # the list of reconstructions names the control as a person reads it, never its directory
    items = [compare.experiment_list.item(i).text() for i in range(compare.experiment_list.count())]
    assert f"U-Net — untrained victim (control), {TAP} ({VARIANT})" in items, items
    assert f"U-Net {TAP} ({VARIANT})" in items and not any("@" in i for i in items), items
    assert any(h.startswith("U-Net — untrained victim (control)") for h in headers), headers
