"""The likelihood-ratio attack (LiRA) in an audit (threat model "training-data leakage"):
shadow copies of the user's own MONAI UNet, rebuilt from the ``model:`` block, trained on
halves of the attacker's subjects with ``membership.shadow_train``; a TorchScript model
cannot be rebuilt, keeps the threshold attacks and says why."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from monai.networks.nets import UNet

from napari_invert.audit.shadows import UserSegmenter, UserShadows
from napari_invert.audit_config import parse_audit_config
from napari_invert.cli import main
from napari_invert.models.sources import load_model_source
from napari_invert.study.layout import StudyFolder
from tests.own_model_helpers import monai_unet_args
from tests.test_audit_membership import _overfit_unet, _training_arrays, _write_cohort

MEMBERS = ["T01", "T02", "T03", "T04"]
HOLDOUT = ["T05", "T06", "T07"]
ATTACK = ["T08", "T09", "T10"]
THRESHOLDS = {"loss_threshold", "dice_threshold", "confidence_threshold"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lira")
    _write_cohort(root / "cohort")
    net = _overfit_unet(*_training_arrays(root / "cohort"), steps=80)
    torch.save(net.state_dict(), root / "unet.pt")
    torch.jit.script(net).save(str(root / "unet.ts"))
    return root


def _config(model: dict) -> dict:
    return {
        "name": "lira",
        "model": model,
        "cohort": {"kind": "folder", "path": "cohort"},
        "preprocess": {"crop_to_mask": False, "cache": False},
        "subjects": {"trained_on": MEMBERS, "holdout": HOLDOUT, "attack": ATTACK},
        "attack": {"taps": ["bottleneck"], "decoder_base_filters": 4, "train": {"steps": 2, "batch_size": 2}},
        "membership": {
            "lira": True,
            "n_shadows": 2,
            "shadow_train": {"steps": 4, "batch_size": 1, "lr": 0.01, "validation_fraction": 0},
            "bootstrap": 200,
            "permutations": 200,
        },
        "device": "cpu",
    }


MONAI = {"kind": "monai", "network": "UNet", "args": monai_unet_args(), "weights": "unet.pt"}


def test_lira_trains_shadows_of_the_users_architecture(setup, tmp_path, capsys):
    cfg_path = setup / "audit_lira.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(MONAI)))
    out = tmp_path / "out"
    argv = ["audit", str(cfg_path), "--out", str(out), "--no-evaluate", "--no-progress"]
    assert main(argv) == 0
    folder = StudyFolder(out)
    path = folder.membership_json("skull_stripped", 0, "user")
    doc = json.loads(path.read_text())
    assert doc["n_shadows"] == 2 and doc["threat_model"] == "training-data leakage"
    assert set(doc["attacks"]) == THRESHOLDS | {"lira_offline", "lira_global"}
    assert doc["lira"].startswith("2 shadow copies of the user's architecture")
    # complementary halves of the attacker's own subjects, never a member or non-member
    halves = [set(s["trained_on"]) for s in doc["shadows"]]
    assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(ATTACK)
    # each shadow is the user's MONAI UNet, rebuilt and trained (weights differ from the victim's)
    config = parse_audit_config(yaml.safe_load(cfg_path.read_text()), base=setup)
    adapter = load_model_source(config.model)
    shadow, meta = UserShadows(adapter).load(folder.shadow_stem("skull_stripped", 0, "user", 0), "cpu")
    assert isinstance(shadow, UserSegmenter) and isinstance(shadow.net, UNet)
    assert meta["kind"] == "user_shadow" and meta["trained_on"] == doc["shadows"][0]["trained_on"]
    victim = dict(adapter.module.named_parameters())
    assert any(not torch.equal(p, victim[n.removeprefix("net.")]) for n, p in shadow.named_parameters())
    # the overfit victim still fits its members far better: the threshold attack finds them
    assert doc["attacks"]["loss_threshold"]["auc"] >= 0.9
    for name in ("lira_offline", "lira_global"):
        assert 0.0 <= doc["attacks"][name]["auc"] <= 1.0
    assert set(doc["controls"]["untrained_victim"]["attacks"]) == set(doc["attacks"])
    audit = json.loads((out / "audit.json").read_text())
    assert audit["membership"]["n_shadows"] == 2
    assert "Likelihood-ratio attack (LiRA): 2 shadow copies" in audit["membership"]["verdict"]

    before = path.stat().st_mtime_ns  # a rerun loads the shadows and the finished result
    assert main(argv) == 0
    assert path.stat().st_mtime_ns == before
    capsys.readouterr()
    assert main(["evaluate", str(out), "--metrics", "correlation", "--no-progress"]) == 0
    line = next(v for v in capsys.readouterr().out.splitlines() if "[training-data leakage]" in v)
    assert "membership inference AUC" in line and "Likelihood-ratio attack (LiRA): 2 shadow" in line
    with capsys.disabled():
        print("\n" + line)


def test_torchscript_keeps_threshold_attacks_and_says_why(setup, tmp_path):
    model = {"kind": "torchscript", "path": "unet.ts", "input_size": [20, 20, 20]}
    cfg = _config(model)
    cfg["controls"] = {"untrained_victim": False}
    cfg_path = setup / "audit_ts.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["audit", str(cfg_path), "--out", str(out), "--no-evaluate", "--no-progress"]) == 0
    doc = json.loads(StudyFolder(out).membership_json("skull_stripped", 0, "user").read_text())
    assert doc["n_shadows"] == 0 and set(doc["attacks"]) == THRESHOLDS
    assert doc["lira"].startswith("not available for a TorchScript model: its architecture cannot be rebuilt")
    verdict = json.loads((out / "audit.json").read_text())["membership"]["verdict"]
    assert "Threshold attacks only" in verdict and "TorchScript" in verdict
