"""`napari-invert audit` reports membership inference (threat model "training-data
leakage") when the training subjects and held-out non-members are known: a real tiny MONAI
UNet overfit on four tiny volumes is audited end to end; the study-format
``membership.json`` is pooled by the unchanged ``napari-invert evaluate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.networks.nets import UNet
from scipy import ndimage

from napari_invert.cli import main
from napari_invert.config import PreprocessConfig
from napari_invert.data.cohort import Cohort
from napari_invert.data.nifti import save_nifti
from napari_invert.data.prepare import prepare_cohort
from napari_invert.report import evaluate_study
from napari_invert.study.layout import StudyFolder
from tests.own_model_helpers import monai_unet_args

SHAPE = (20, 20, 20)
MEMBERS = ["T01", "T02", "T03", "T04"]
HOLDOUT = ["T05", "T06", "T07", "T08"]
ATTACK = ["T09", "T10"]


def _write_cohort(root: Path) -> None:
    """10 subjects: smooth random images inside an ellipsoid; labels 1 = brain, 2 = a
    random smooth region drawn independently of the image, so a network can only get
    class 2 right on the subjects it memorised (members)."""
    rng = np.random.default_rng(3)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = (zz / 0.8) ** 2 + (yy / 0.85) ** 2 + (xx / 0.75) ** 2 < 1
    for i in range(1, 11):
        img = ndimage.gaussian_filter(rng.random(SHAPE), 1.2)
        img = (img - img.min()) / (np.ptp(img) + 1e-6) * 0.8 + 0.2
        img = np.where(brain, img, 0).astype(np.float32)
        region = ndimage.gaussian_filter(rng.random(SHAPE), 1.5)
        lab = np.zeros(SHAPE, np.uint8)
        lab[brain] = 1
        lab[brain & (region > np.median(region[brain]))] = 2
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        save_nifti(root / "images" / f"T{i:02d}.nii.gz", img, affine)
        save_nifti(root / "labels" / f"T{i:02d}.nii.gz", lab, affine)


def _training_arrays(cohort: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The members' images and labels exactly as the audit prepares them (the user trained
    on the same preprocessing)."""
    prepared = prepare_cohort(
        Cohort.from_path(cohort, kind="folder"),
        PreprocessConfig(crop_to_mask=False, cache=False),
        multiple_of=4,
        variant="skull_stripped",
        progress=False,
    )
    chosen = [s for s in prepared.subjects if s.subject_id in MEMBERS]
    x = torch.from_numpy(np.stack([s.image for s in chosen]).astype(np.float32))[:, None]
    y = torch.from_numpy(np.stack([s.labels for s in chosen]).astype(np.int64))
    return x, y


def _overfit_unet(x: torch.Tensor, y: torch.Tensor, steps: int = 120) -> UNet:
    torch.manual_seed(0)
    net = UNet(**monai_unet_args())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mia")
    _write_cohort(root / "cohort")
    net = _overfit_unet(*_training_arrays(root / "cohort"))
    torch.save(net.state_dict(), root / "unet.pt")
    return root


def _config(root: Path, subjects: dict) -> dict:
    return {
        "name": "mia",
        "model": {"kind": "monai", "network": "UNet", "args": monai_unet_args(), "weights": "unet.pt"},
        "cohort": {"kind": "folder", "path": "cohort"},
        "preprocess": {"crop_to_mask": False, "cache": False},
        "subjects": subjects,
        "attack": {"taps": ["bottleneck"], "decoder_base_filters": 4, "train": {"steps": 2, "batch_size": 2}},
        "membership": {"bootstrap": 200, "permutations": 200},
        "device": "cpu",
    }


def test_audit_reports_membership_then_evaluate_prints_the_verdict(setup, tmp_path, capsys):
    cfg_path = setup / "audit_known.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(setup, {"trained_on": MEMBERS, "holdout": HOLDOUT})))
    out = tmp_path / "out"
    argv = ["audit", str(cfg_path), "--out", str(out), "--no-evaluate", "--no-progress"]
    assert main(argv) == 0
    folder = StudyFolder(out)
    path = folder.membership_json("skull_stripped", 0, "user")
    doc = json.loads(path.read_text())
    assert doc["threat_model"] == "training-data leakage"
    assert doc["lira"].startswith("not run: membership.lira is false")
    truth = {row["subject_id"]: row["member"] for row in doc["subjects"]}
    assert truth == {**dict.fromkeys(MEMBERS, True), **dict.fromkeys(HOLDOUT, False)}
    assert doc["inputs"]["attacker_subjects"] == ATTACK
    assert set(doc["attacks"]) == {"loss_threshold", "dice_threshold", "confidence_threshold"}
    # the overfit model fits its training subjects far better than the held-out ones
    assert doc["attacks"]["loss_threshold"]["auc"] >= 0.9
    assert doc["signals"]["loss"]["member_mean"] < doc["signals"]["loss"]["nonmember_mean"]
    control = doc["controls"]["untrained_victim"]["attacks"]
    assert set(control) == set(doc["attacks"])
    assert control["loss_threshold"]["auc"] < doc["attacks"]["loss_threshold"]["auc"]
    audit = json.loads((out / "audit.json").read_text())
    assert audit["membership"]["status"] == "done"
    assert "Threshold attacks only; likelihood-ratio attack (LiRA) not run" in audit["membership"]["verdict"]
    print(
        "membership AUCs:",
        {k: round(v["auc"], 3) for k, v in doc["attacks"].items()},
        "control:",
        {k: round(v["auc"], 3) for k, v in control.items()},
    )

    # a rerun reuses the finished result
    before = path.stat().st_mtime_ns
    assert main(argv) == 0
    assert path.stat().st_mtime_ns == before

    capsys.readouterr()
    assert main(["evaluate", str(out), "--metrics", "correlation", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    line = next(v for v in printed.splitlines() if "[training-data leakage]" in v)
    assert "skull_stripped/user: membership inference AUC" in line
    assert "LiRA" in line and "membership.lira is false" in line
    auc = float(line.split("membership inference AUC ")[1].split()[0])
    assert auc >= 0.9
    with capsys.disabled():
        print("\n" + line)


def test_unknown_training_subjects_write_no_membership(setup, tmp_path):
    cfg = _config(setup, {"trained_on": "unknown", "attack": ATTACK})
    cfg["controls"] = {"untrained_victim": False}
    cfg_path = setup / "audit_unknown.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["audit", str(cfg_path), "--out", str(out), "--no-evaluate", "--no-progress"]) == 0
    assert not list(out.rglob("membership.json"))
    summary = evaluate_study(out, metrics=["correlation"], progress=False, figures=False)
    line = next(v for v in summary.verdicts if "[training-data leakage]" in v)
    assert "not measured" in line and "trained_on is unknown" in line


def test_missing_labels_is_one_clear_status(setup, tmp_path):
    cohort = tmp_path / "nolabels"
    shutil.copytree(setup / "cohort" / "images", cohort / "images")
    shutil.copy(setup / "unet.pt", tmp_path / "unet.pt")
    cfg = _config(tmp_path, {"trained_on": MEMBERS, "holdout": HOLDOUT})
    cfg["cohort"] = {"kind": "folder", "path": "nolabels"}
    cfg["controls"] = {"untrained_victim": False}
    cfg_path = tmp_path / "audit.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["audit", str(cfg_path), "--out", str(out), "--no-evaluate", "--no-progress"]) == 0
    assert not list(out.rglob("membership.json"))
    status = json.loads((out / "audit.json").read_text())["membership"]["status"]
    assert status.startswith("not run: membership inference needs the label map") and "T01" in status
