"""An audit's report has a study report's sections: a small MONAI UNet trained outside the
tool, saved as a state dict, audited through the CLI (``napari-invert audit CONFIG --out
DIR``, which evaluates): verdict with threat-model labels, controls with the untrained
victim, membership inference, Dice (the user's model re-segmenting originals and
reconstructions, beside a trivial predictor) and the "barely segments" banner."""

from __future__ import annotations

import html
import json
import re

import torch
import yaml
from monai.networks.nets import UNet

from napari_invert.cli import main
from tests.own_model_helpers import load_training_arrays, monai_unet_args, train_few_steps, write_cohort

TRAINED_ON = ["T01", "T02", "T03"]
HOLDOUT = ["T04", "T05"]

#: the sections a study report has that an audit must have too (report/html.py ids)
STUDY_SECTIONS = (
    "verdict",
    "controls",
    "identification",
    "membership",
    "dice",
    "training",
    "splits",
    "config",
)


def _section(page: str, sid: str) -> str:
    match = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert match, f"no '{sid}' section"
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def test_audit_report_has_the_study_sections_with_threat_models(tmp_path):
    torch.set_num_threads(1)
    write_cohort(tmp_path / "cohort", n=8)
    net = train_few_steps(UNet(**monai_unet_args()), *load_training_arrays(tmp_path / "cohort", TRAINED_ON))
    torch.save(net.state_dict(), tmp_path / "unet.pt")  # the way MONAI users save a model
    cfg = {
        "name": "report",
        "model": {"kind": "monai", "network": "UNet", "args": monai_unet_args(), "weights": "unet.pt"},
        "cohort": {"kind": "folder", "path": "cohort"},
        "preprocess": {"crop_to_mask": False, "cache": False},
        "subjects": {"trained_on": TRAINED_ON, "holdout": HOLDOUT, "attack": "rest"},
        "attack": {
            "taps": ["bottleneck+skips"],
            "decoder_base_filters": 4,
            "train": {"steps": 2, "batch_size": 2},
        },
        "membership": {"bootstrap": 200, "permutations": 200},
        "evaluation": {"metrics": ["correlation", "dice"], "identification_metric": "correlation"},
        "device": "cpu",
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["audit", str(tmp_path / "audit.yaml"), "--out", str(out), "--no-progress"]) == 0

    page = (out / "evaluation" / "report.html").read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    assert set(STUDY_SECTIONS) <= set(ids), set(STUDY_SECTIONS) - set(ids)

    verdict = _section(page, "verdict")
    assert "[feature inversion] user bottleneck+skips" in verdict
    assert "[feature inversion] user@untrained bottleneck+skips" in verdict
    assert re.search(r"\d+/5 private subjects re-identified at top-1", verdict)  # 3 members + 2 non-members
    audit = json.loads((out / "audit.json").read_text())
    auc = max(a["auc"] for a in audit["membership"]["attacks"].values())
    assert f"[training-data leakage] skull_stripped/user: membership inference AUC {auc:.2f}" in verdict

    controls = _section(page, "controls")
    assert "untrained victim" in controls.lower() and "feature inversion" in controls

    membership = _section(page, "membership")
    assert "training-data leakage" in membership and f"{auc:.2f}" in membership

    # Dice: the user's model (and its untrained control) re-segments originals and reconstructions
    rows = (out / "evaluation" / "tables" / "dice_per_subject.csv").read_text().splitlines()
    assert rows[0].startswith("variant,fold,arch")
    archs = {r.split(",")[2] for r in rows[1:]}
    assert archs == {"user", "user@untrained"}
    inputs = {r.split(",")[6] for r in rows[1:]}
    assert inputs == {"original", "reconstruction", "prior"}
    dice = _section(page, "dice")
    assert "trivial" in dice.lower() or "majority" in dice.lower()

    # a UNet trained for 3 steps does not segment: the study's banner says so
    banners = re.findall(r'<div class="warning">(.*?)</div>', page, re.S)
    assert any("barely segment" in b for b in banners), banners
