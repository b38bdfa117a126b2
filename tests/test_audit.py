"""`napari-invert audit`: the inversion attack on a user's own, briefly trained MONAI /
bundle / TorchScript / nnU-Net network, written as a study folder that the unchanged
evaluation reads; subjects by role; the untrained control; the membership hook (the
built-in membership attack is tested in test_audit_membership.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.networks.nets import DynUNet, SegResNet, UNet
from safetensors.torch import save_file

from napari_invert.audit import AuditRunner, register_membership_attack, resolve_subjects
from napari_invert.audit_config import AuditSubjects, load_audit_config, parse_audit_config
from napari_invert.cli import main
from napari_invert.errors import ConfigError
from napari_invert.report import evaluate_study
from napari_invert.study.results import StudyResults
from tests.own_model_helpers import (
    build_nnunet_net,
    dynunet_args,
    load_training_arrays,
    monai_unet_args,
    segresnet_args,
    train_few_steps,
    write_bundle,
    write_cohort,
    write_nnunet,
)

REPO = Path(__file__).resolve().parent.parent
TRAINED_ON = ["T01", "T02"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own_cohort")
    write_cohort(root, n=6)
    return root


@pytest.fixture(scope="module")
def xy(cohort):
    return load_training_arrays(cohort, TRAINED_ON)


def _config(cohort: Path, model: dict, **over) -> dict:
    cfg = {
        "name": "t",
        "model": model,
        "cohort": {"kind": "folder", "path": str(cohort)},
        "preprocess": {"crop_to_mask": False, "cache": False},
        "subjects": {"trained_on": TRAINED_ON, "holdout": ["T03"], "attack": "rest"},
        "attack": {"taps": ["bottleneck"], "decoder_base_filters": 4, "train": {"steps": 2, "batch_size": 2}},
        "device": "cpu",
    }
    cfg.update(over)
    return cfg


def _audit(tmp_path: Path, cfg: dict):
    config = parse_audit_config(cfg, base=tmp_path)
    return AuditRunner(config, tmp_path / "audit", progress=False).run()


def test_monai_unet_audit_from_the_cli_then_evaluate(tmp_path, cohort, xy):
    net = train_few_steps(UNet(**monai_unet_args()), *xy)
    torch.save(net.state_dict(), tmp_path / "unet.pt")
    cfg = _config(
        cohort,
        {"kind": "monai", "network": "UNet", "args": monai_unet_args(), "weights": "unet.pt"},
        attack={"taps": ["bottleneck+skips", "level0"], "decoder_base_filters": 4, "train": {"steps": 2}},
    )
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert (
        main(["audit", str(tmp_path / "audit.yaml"), "--out", str(out), "--no-evaluate", "--no-progress"])
        == 0
    )
    results = StudyResults(out)
    assert results.splits["folds"] == [
        {"fold": 0, "private": ["T01", "T02", "T03"], "attack": ["T04", "T05", "T06"]}
    ]
    exps = {(e.arch, e.tap) for e in results.experiments()}
    assert exps == {
        ("user", "bottleneck+skips"),
        ("user", "level0"),
        ("user@untrained", "bottleneck+skips"),
        ("user@untrained", "level0"),
    }
    audit = json.loads((out / "audit.json").read_text())
    assert audit["taps"] == {
        "bottleneck+skips": ["model.1.submodule.1.submodule", "model.0", "model.1.submodule.0"],
        "level0": ["model.0"],
    }
    assert audit["subjects"]["members"] == TRAINED_ON and audit["subjects"]["non_members"] == ["T03"]
    assert audit["victim_dice"]["status"] == "done" and 0 <= audit["victim_dice"]["members"] <= 1
    # the built-in threshold attacks (training-data leakage), written where evaluate pools them
    assert audit["membership"]["status"] == "done" and audit["membership"]["lira"].startswith("not run")
    assert (out / "skull_stripped" / "fold0" / "user" / "membership" / "membership.json").is_file()
    assert audit["untrained_control"].startswith("the same architecture")
    recon = results.recon(next(iter(results.experiments())), "T01")
    assert recon.shape == (20, 20, 20) and np.isfinite(recon).all()
    # the trained victim's decoder and the control's differ (different encoders)
    summary = evaluate_study(out, metrics=["correlation"], progress=False, figures=False)
    assert {e.experiment.arch for e in summary.experiments} == {"user", "user@untrained"}
    assert all(len(e.row_ids) == 3 for e in summary.experiments)
    assert (out / "evaluation" / "report.html").is_file()
    # rerun: every step is done, nothing retrained
    decoder = out / "skull_stripped" / "fold0" / "user" / "level0" / "decoder.safetensors"
    before = decoder.stat().st_mtime_ns
    assert (
        main(["audit", str(tmp_path / "audit.yaml"), "--out", str(out), "--no-evaluate", "--no-progress"])
        == 0
    )
    assert decoder.stat().st_mtime_ns == before


def _segresnet(tmp_path, xy):
    net = train_few_steps(SegResNet(**segresnet_args()), *xy)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    return {"kind": "monai", "network": "SegResNet", "args": segresnet_args(), "weights": "w.safetensors"}


def _bundle(tmp_path, xy):
    net = train_few_steps(DynUNet(**dynunet_args()), *xy)
    write_bundle(tmp_path / "bundle", net, {"_target_": "DynUNet", **dynunet_args()})
    return {"kind": "bundle", "path": "bundle"}


def _torchscript(tmp_path, xy):
    net = train_few_steps(UNet(**monai_unet_args()), *xy)
    torch.jit.script(net).save(str(tmp_path / "unet.ts"))
    return {"kind": "torchscript", "path": "unet.ts", "input_size": [24, 24, 24]}


def _nnunet(tmp_path, xy):
    net = train_few_steps(build_nnunet_net(), *xy)
    write_nnunet(tmp_path / "nnunet", net)
    return {"kind": "nnunet", "path": "nnunet", "patch_size": [16, 16, 16]}


@pytest.mark.parametrize(
    "make",
    [_segresnet, _bundle, _torchscript, _nnunet],
    ids=["safetensors", "bundle", "torchscript", "nnunet"],
)
def test_audit_each_source_end_to_end(tmp_path, cohort, xy, make):
    folder = _audit(tmp_path, _config(cohort, make(tmp_path, xy)))
    audit = json.loads((folder.root / "audit.json").read_text())
    assert audit["untrained_control"].startswith("the same architecture")
    summary = evaluate_study(folder.root, metrics=["correlation"], progress=False, figures=False)
    assert {e.experiment.arch for e in summary.experiments} == {"user", "user@untrained"}
    for ev in summary.experiments:
        assert ev.similarity["correlation"].shape == (3, 6)
    assert audit["victim_dice"]["status"] == "done"


def test_unknown_training_subjects_report_feature_inversion_only(tmp_path, cohort):
    cfg = _config(
        cohort,
        {"kind": "monai", "network": "UNet", "args": monai_unet_args()},
        subjects={"trained_on": "unknown", "attack": ["T04", "T05", "T06"]},
        controls={"untrained_victim": False},
    )
    folder = _audit(tmp_path, cfg)
    audit = json.loads((folder.root / "audit.json").read_text())
    assert "not reported" in audit["threat_models"]["training-data leakage"]
    assert audit["membership"]["status"].startswith("not reported")
    assert not list(folder.root.rglob("membership.json"))
    assert audit["subjects"]["targets"] == ["T01", "T02", "T03"]
    assert audit["untrained_control"].startswith("off")


def test_subject_roles():
    ids = [f"T{i:02d}" for i in range(1, 7)]
    with pytest.raises(ConfigError, match="attack set overlaps trained_on \\(T02\\)"):
        resolve_subjects(AuditSubjects(trained_on=["T01", "T02"], attack=["T02", "T05"]), ids)
    with pytest.raises(ConfigError, match="'rest' needs trained_on"):
        resolve_subjects(AuditSubjects(trained_on="unknown"), ids)
    with pytest.raises(ConfigError, match="not in the cohort \\(X99\\)"):
        resolve_subjects(AuditSubjects(trained_on=["X99"]), ids)
    r = resolve_subjects(AuditSubjects(trained_on=["T01", "T02"], holdout=["T03"]), ids)
    assert (r.attack, r.targets, r.members, r.non_members) == (
        ["T04", "T05", "T06"],
        ["T01", "T02", "T03"],
        ["T01", "T02"],
        ["T03"],
    )


def test_subject_lists_from_files(tmp_path):
    (tmp_path / "train.txt").write_text("# trained on\nT01\nT02, T03\n")
    cfg = parse_audit_config(
        {
            "model": {"kind": "torchscript", "path": "m.ts"},
            "cohort": {"kind": "folder", "path": "c"},
            "subjects": {"trained_on": "train.txt"},
        },
        base=tmp_path,
    )
    r = resolve_subjects(cfg.subjects, [f"T{i:02d}" for i in range(1, 7)])
    assert r.trained_on == ["T01", "T02", "T03"] and r.attack == ["T04", "T05", "T06"]


def test_channel_mismatch_is_one_clear_error(tmp_path, cohort):
    args = {**monai_unet_args(), "in_channels": 2}
    with pytest.raises(ConfigError) as exc:
        _audit(tmp_path, _config(cohort, {"kind": "monai", "network": "UNet", "args": args}))
    assert "takes 2 input channel(s) but the cohort gives 1" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_membership_hook_gets_members_and_non_members(tmp_path, cohort):
    seen = {}

    def attack(adapter, members, non_members, attacker, folder, config):
        seen["members"] = [s.subject_id for s in members]
        seen["non_members"] = [s.subject_id for s in non_members]
        seen["attacker"] = [s.subject_id for s in attacker]
        seen["segment"] = adapter.segment(members[0].image).shape
        return {"auc": 0.5}

    register_membership_attack(attack)
    try:
        cfg = _config(
            cohort,
            {"kind": "monai", "network": "UNet", "args": monai_unet_args()},
            controls={"untrained_victim": False},
        )
        folder = _audit(tmp_path, cfg)
    finally:
        register_membership_attack(None)
    assert seen == {
        "members": TRAINED_ON,
        "non_members": ["T03"],
        "attacker": ["T04", "T05", "T06"],
        "segment": (20, 20, 20),
    }
    membership = json.loads((folder.root / "audit.json").read_text())["membership"]
    assert membership["status"] == "done" and membership["auc"] == 0.5


def test_sample_config_validates(monkeypatch, tmp_path):
    monkeypatch.setenv("NAPARI_INVERT_DATA", str(tmp_path))
    cfg = load_audit_config(REPO / "sample_configs" / "own_model_monai.yaml")
    assert cfg.model.kind == "monai" and cfg.model.network == "UNet"
    assert cfg.model.weights == (REPO / "sample_configs" / "unet_lpba40_4mm.pt").resolve()
    assert cfg.cohort.kind == "lpba40" and cfg.cohort.path == tmp_path / "lpba40"
    assert cfg.preprocess.voxel_mm == 4
    r = resolve_subjects(cfg.subjects, [f"S{i:02d}" for i in range(1, 41)])
    assert not set(r.attack) & set(r.trained_on)
    assert len(r.trained_on) == 15 and len(r.non_members) == 5 and len(r.attack) == 20
