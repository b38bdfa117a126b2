"""The Attack dock against the user's own segmenter (issue 12): a real MONAI UNet trained for
a few steps on tiny volumes, saved as a state dict with an audit config; the Study dock
discovers its taps and publishes it, the Attack dock trains an inversion decoder on a tap
(thread worker, progress, Cancel), saves it and shows original | reconstruction pairs.

The core it calls (:mod:`napari_invert.audit.decoder`) is tested first without Qt. Run GUI
tests with ``QT_API=pyqt6`` under Xvfb (pytest-xvfb).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.networks.nets import UNet

from napari_invert.audit.decoder import OwnModelCohort, decoder_stem, reconstruct_own, train_own_decoder
from napari_invert.audit_config import load_audit_config
from napari_invert.config import TrainConfig
from napari_invert.errors import ConfigError
from napari_invert.models.sources import load_model_source
from tests.own_model_helpers import write_cohort

TRAINED_ON = ["T01", "T02"]
HOLDOUT = ["T03"]
ATTACK = ["T04", "T05", "T06"]
#: three downsamplings: the network needs sizes divisible by 8, the cohort is 20^3
ARGS = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [4, 8, 16, 32],
    "strides": [2, 2, 2],
}
WAIT_MS = 90_000

needs_display = pytest.mark.skipif(
    sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
    reason="no display: install Xvfb (pytest-xvfb starts it)",
)


@pytest.fixture(scope="module")
def audit_yaml(tmp_path_factory) -> Path:
    """Cohort (6 subjects, 20^3), a UNet trained 3 steps on T01-T02 (padded to 24^3, as the
    audit prepares them), ``torch.save(state_dict)``, and an audit config naming both."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("own_gui")
    write_cohort(root / "cohort", n=6)
    import nibabel as nib

    x = np.stack(
        [np.asarray(nib.load(str(root / "cohort" / "images" / f"{s}.nii.gz")).dataobj) for s in TRAINED_ON]
    )
    y = np.stack(
        [np.asarray(nib.load(str(root / "cohort" / "labels" / f"{s}.nii.gz")).dataobj) for s in TRAINED_ON]
    )
    pad = [(0, 0)] + [(2, 2)] * 3
    xt = torch.from_numpy(np.pad(x, pad).astype(np.float32))[:, None]
    yt = torch.from_numpy(np.pad(y, pad).astype(np.int64))
    torch.manual_seed(0)
    net = UNet(**ARGS)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    torch.save(net.state_dict(), root / "unet.pt")
    config = {
        "name": "mine",
        "model": {
            "kind": "monai",
            "network": "UNet",
            "args": ARGS,
            "weights": "unet.pt",
            "input_size": [24, 24, 24],
        },
        "cohort": {"kind": "folder", "path": "cohort"},
        "preprocess": {"crop_to_mask": False, "cache": False},
        "subjects": {"trained_on": TRAINED_ON, "holdout": HOLDOUT, "attack": "rest"},
        "attack": {"decoder_base_filters": 2, "train": {"steps": 3, "batch_size": 1}},
        "device": "cpu",
    }
    path = root / "audit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_core_trains_a_decoder_on_a_tap_of_the_users_model(audit_yaml: Path) -> None:
    config = load_audit_config(audit_yaml)
    adapter = load_model_source(config.model)
    data = OwnModelCohort.from_audit_config(config)
    assert adapter.multiple_of == 8 and data.subject_ids() == TRAINED_ON + HOLDOUT + ATTACK
    stem = decoder_stem(audit_yaml, "level0")
    assert stem == audit_yaml.parent / "audit_napari_invert" / "level0" / "decoder"
    train = TrainConfig(steps=3, batch_size=1, validation_fraction=0)
    with pytest.raises(ConfigError, match="T01 trained the model"):  # never the model's own subjects
        train_own_decoder(adapter, "level0", data, ["T01", "T04"], [], stem, train, trained_on=TRAINED_ON)
    run = train_own_decoder(
        adapter,
        "level0",
        data,
        ATTACK,
        ["T01", "T03"],
        stem,
        train,
        base_filters=2,
        device="cpu",
        trained_on=TRAINED_ON,
    )
    assert not run.cancelled and run.steps_done == 3 and run.saved is not None
    assert run.layers == adapter.resolve_tap("level0")[1] == ["model.0"]  # tapped with the adapter's tapper
    # padded to the network's multiple (20 -> 24), reconstructions on that grid, saved as NIfTI
    assert {k: v.shape for k, v in run.recons.items()} == {"T01": (24, 24, 24), "T03": (24, 24, 24)}
    assert run.originals["T01"].shape == (24, 24, 24) and np.isfinite(run.recons["T01"]).all()
    assert sorted(p.name for p in run.written) == ["T01.nii.gz", "T03.nii.gz"]
    assert len((stem.parent / "curve.csv").read_text().splitlines()) == 1 + 3
    again = reconstruct_own(adapter, "level0", data, stem, ["T01"], device="cpu")
    np.testing.assert_allclose(again.recons["T01"], run.recons["T01"], atol=1e-5)
    with pytest.raises(Exception, match="trained on layers"):  # a decoder of another tap is refused
        reconstruct_own(adapter, "bottleneck", data, stem, ["T01"], device="cpu")


@pytest.mark.gui
@needs_display
def test_attack_dock_trains_against_the_users_model(make_napari_viewer, qtbot, audit_yaml: Path) -> None:
    pytest.importorskip("pytestqt")
    from qtpy.QtCore import Qt
    from widget_helpers import train_and_cancel  # imports napari: only in the GUI test

    from napari_invert.attack import job as attack_job
    from napari_invert.widgets._attack_widget import AttackWidget
    from napari_invert.widgets._study_widget import StudyWidget

    viewer = make_napari_viewer()
    study = StudyWidget(viewer)
    attack = AttackWidget(viewer)
    box = study.audit_box
    box.config_file.value = audit_yaml
    box.discover_button.click()
    qtbot.waitUntil(lambda: not box.busy, timeout=WAIT_MS)
    assert box.model is not None, box.info.text()
    assert "Attack set (3 of 6 cohort subjects, none in trained_on): T04, T05, T06" in box.info.text()

    # the Attack dock switched to the user's model: its taps, its subjects, its settings
    assert attack.arch_combo.currentText() == "user (your segmenter)"
    taps = [attack.tap_combo.itemText(i) for i in range(attack.tap_combo.count())]
    assert taps == [entry for entry, _ in box.model.choices] and attack.tap_combo.currentText() == box.tap
    assert attack.attack_ids() == ATTACK  # 'rest': neither trained on nor held out
    texts = [attack.attack_list.item(i).text() for i in range(attack.attack_list.count())]
    assert "T01  (trained the model)" in texts and "T03  (held out)" in texts
    assert attack.private_ids() == TRAINED_ON + HOLDOUT
    assert attack.steps.value() == 3 and attack.base_filters.value() == 2  # from the audit config
    assert attack.train_button.isEnabled()

    # ticking a training subject is refused with one line
    attack.attack_list.item(0).setCheckState(Qt.Checked)
    assert not attack.start_training() and "untick T01" in attack.status.text()
    attack.attack_list.item(0).setCheckState(Qt.Unchecked)

    # a long training on the bottleneck, cancelled: nothing saved, state kept for a resume
    attack.tap_combo.setCurrentText("bottleneck")
    stem = decoder_stem(audit_yaml, "bottleneck")
    train_and_cancel(attack, qtbot, WAIT_MS)
    assert "Cancelled" in attack.status.text()
    assert not stem.with_suffix(".json").exists()
    assert attack_job.resume_stem(stem).with_suffix(".json").is_file()  # the state is kept for a resume

    # a short training runs to the end: decoder saved, reconstructions shown beside the originals
    attack.steps.setValue(3)
    attack.replace_box.setChecked(True)
    assert attack.start_training()
    qtbot.waitUntil(lambda: not attack.running, timeout=WAIT_MS)
    run = attack.last_outcome
    assert not run.cancelled and run.saved is not None, attack.status.text()
    assert (
        stem.with_suffix(".json").is_file() and "[feature inversion] tap bottleneck" in attack.status.text()
    )
    assert sorted(run.recons) == TRAINED_ON + HOLDOUT
    assert (stem.parent / "recon" / "T01.nii.gz").is_file()
    assert not attack_job.resume_stem(stem).with_suffix(".json").exists()  # removed once saved
    names = [layer.name for layer in viewer.layers]
    assert names[:2] == ["T01 original", "T01 reconstruction (your segmenter, bottleneck)"]
    assert viewer.grid.enabled and viewer.layers["T01 original"].data.shape == (24, 24, 24)

    # a new Attack dock picks up the published model; clearing it in the Study dock switches back
    late = AttackWidget(viewer)
    assert late.arch_combo.currentText() == "user (your segmenter)"
    (audit_yaml.parent / "bad.yaml").write_text("name: x\n")
    box.config_file.value = audit_yaml.parent / "bad.yaml"
    box.discover_button.click()
    qtbot.waitUntil(lambda: not box.busy, timeout=WAIT_MS)
    assert not late._own.active and not late.train_button.isEnabled()


def test_core_taps_a_torchscript_export_through_its_graph(audit_yaml: Path, tmp_path: Path) -> None:
    """A model file alone (no config): the cohort folder with the default preprocessing; a
    TorchScript export is tapped on its inlined graph (the adapter's GraphTapper)."""
    from napari_invert.models.sources import model_adapter_from_dict

    net = load_model_source(load_audit_config(audit_yaml).model).module
    torch.jit.trace(net, torch.zeros(1, 1, 24, 24, 24)).save(str(tmp_path / "unet.ts"))
    adapter = model_adapter_from_dict(
        {"kind": "torchscript", "path": str(tmp_path / "unet.ts"), "input_size": [24, 24, 24]}
    )
    data = OwnModelCohort.from_folder(audit_yaml.parent / "cohort")
    stem = decoder_stem(tmp_path / "unet.ts", "bottleneck")
    run = train_own_decoder(
        adapter,
        "bottleneck",
        data,
        ATTACK,
        ["T01"],
        stem,
        TrainConfig(steps=2, batch_size=1),
        base_filters=2,
        device="cpu",
    )
    assert run.layers == adapter.resolve_tap("bottleneck")[1] and run.layers[0].startswith("op")
    shape = run.recons["T01"].shape
    assert all(s % adapter.multiple_of == 0 for s in shape) and shape == run.originals["T01"].shape
