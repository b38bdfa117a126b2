"""Threat models and controls: held-out non-members, the untrained victim, taps by level,
re-identification baselines, paired member-minus-non-member statistics — on a real (tiny)
study run end to end on the demo cohort."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_inputs import demo_cohort_for, with_cohort

from napari_invert._io import read_json, write_json_atomic
from napari_invert.attack import make_tapper
from napari_invert.checkpoint import checkpoint_paths, load_checkpoint, save_checkpoint
from napari_invert.config import SegmenterConfig, parse_config
from napari_invert.errors import CheckpointError, ConfigError
from napari_invert.identify.baselines import common_mask, mask_shape_similarity
from napari_invert.identify.paired import paired_difference_interval
from napari_invert.models import build_segmenter, load_segmenter
from napari_invert.report.controls import evaluate_controls
from napari_invert.study.layout import StudyFolder
from napari_invert.study.runner import StudyRunner
from napari_invert.study.splits import make_splits
from napari_invert.tap_names import parse_tap

CONTROLS = {
    "name": "controls",
    "cohort": {"kind": "demo", "n_subjects": 9, "seed": 5, "demo_voxel_mm": 8.0},
    "preprocess": {"voxel_mm": None, "variants": ["skull_stripped"]},
    "folds": 3,  # 3 private / 3 held out / 3 attack per fold
    "segmenter": {"architectures": ["unet"], "base_filters": 4, "levels": 2, "convs_per_level": 1},
    "segmenter_training": {"steps": 3, "batch_size": 2, "checkpoint_every": 3},
    "attack": {
        "taps": {"unet": ["bottleneck+skips", "skip0"]},
        "decoder_base_filters": 4,
        "train": {"steps": 3, "batch_size": 2, "checkpoint_every": 3, "augment": False},
    },
    "membership": {"n_shadows": 2, "bootstrap": 200, "permutations": 200},
    "device": "cpu",
}


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    return demo_cohort_for(CONTROLS, tmp_path_factory.mktemp("cohort"))


def _config(cohort_dir: Path, **changes):
    return parse_config(with_cohort(CONTROLS, cohort_dir, **changes))


@pytest.fixture(scope="module")
def study(tmp_path_factory, cohort_dir) -> StudyFolder:
    return StudyRunner(_config(cohort_dir), tmp_path_factory.mktemp("study") / "s", progress=False).run()


# -- splits ---------------------------------------------------------------------------------------
def test_holdout_splits_hold_every_subject_out_once_and_keep_the_private_sets() -> None:
    ids = [f"S{i:02d}" for i in range(1, 41)]
    folds = make_splits(ids, 4, seed=0, holdout=10)
    assert [(len(f.private), len(f.holdout), len(f.attack)) for f in folds] == [(10, 10, 20)] * 4
    assert sorted(s for f in folds for s in f.holdout) == ids  # each subject held out exactly once
    for f in folds:
        assert not set(f.private) & set(f.holdout) and not set(f.attack) & (set(f.private) | set(f.holdout))
    # private sets are those of the paper's protocol without holdout
    assert [f.private for f in folds] == [f.private for f in make_splits(ids, 4, seed=0)]
    with pytest.raises(ValueError, match="no attack subject"):
        make_splits(ids[:6], 2, seed=0, holdout=3)


# -- taps by level ---------------------------------------------------------------------------------
def test_tap_names_by_level() -> None:
    assert parse_tap("bottleneck+skips", "unet", 3) == ["bottleneck", "skip0", "skip1", "skip2"]
    assert parse_tap("skip2+bottleneck", "unet", 3) == ["bottleneck", "skip2"]
    assert parse_tap("bottleneck+indices0", "segnet", 3) == ["bottleneck", "indices0"]
    for tap, arch, message in (
        ("skip3", "unet", "level 3 does not exist"),
        ("indices0", "segnet", "indices alone"),
        ("bottleneck+skip0", "segnet", "no skip connections"),
        ("bottlenek", "unet", "unknown token"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_tap(tap, arch, 3)
    base = copy.deepcopy(CONTROLS)
    base["cohort"]["path"] = "/nowhere"
    base["attack"]["taps"] = {"unet": ["bottleneck+skip2"]}  # levels: 2 -> skip0, skip1 only
    with pytest.raises(ConfigError, match=r"attack\.taps\.unet.*level 2 does not exist"):
        parse_config(base)


def test_level_taps_return_the_encoder_tensors() -> None:
    torch.manual_seed(0)
    model = build_segmenter("unet", SegmenterConfig(base_filters=4, levels=2, convs_per_level=1), n_classes=3)
    x = torch.rand(1, 1, 16, 16, 16)
    features = model.encode(x)
    tapper = make_tapper(model, "bottleneck+skip1")
    bottleneck, skip1 = tapper(x)
    assert tapper.names == ["bottleneck", "skip1"]
    torch.testing.assert_close(skip1, features.skips[1])
    torch.testing.assert_close(bottleneck, features.bottleneck)


# -- the study with its controls ---------------------------------------------------------------------
def test_held_out_subjects_are_reconstructed_and_never_trained_on(study: StudyFolder) -> None:
    for fold in study.read_splits()["folds"]:
        k, private, holdout, attack = fold["fold"], fold["private"], fold["holdout"], fold["attack"]
        assert len(private) == len(holdout) == len(attack) == 3
        seg = read_json(study.segmenter_stem("skull_stripped", k, "unet").with_suffix(".json"))
        assert seg["trained_on"] == private
        for tap in ("bottleneck+skips", "skip0"):
            dec = read_json(study.decoder_stem("skull_stripped", k, "unet", tap).with_suffix(".json"))
            assert dec["trained_on"] == attack
            for sid in holdout:
                assert study.recon("skull_stripped", k, "unet", tap, sid).is_file()
                assert study.recon_native("skull_stripped", k, "unet", tap, sid).is_file()


def test_the_untrained_victim_is_the_trained_victims_starting_point(study: StudyFolder) -> None:
    control, meta = load_segmenter(study.segmenter_stem("skull_stripped", 0, "unet@untrained"))
    trained, _ = load_segmenter(study.segmenter_stem("skull_stripped", 0, "unet"))
    assert meta["trained_on"] == [] and meta["control"] == "untrained"
    # same architecture, different weights (training moved them)
    assert control.state_dict().keys() == trained.state_dict().keys()
    assert any(
        not torch.equal(a, b) for a, b in zip(control.state_dict().values(), trained.state_dict().values())
    )
    for tap in ("bottleneck+skips", "skip0"):
        dec = read_json(study.decoder_stem("skull_stripped", 0, "unet@untrained", tap).with_suffix(".json"))
        assert (
            dec["arch"] == "unet@untrained" and dec["trained_on"] == study.read_splits()["folds"][0]["attack"]
        )


def test_controls_report_members_nonmembers_untrained_and_baselines(study: StudyFolder) -> None:
    doc = evaluate_controls(study.root)
    assert doc["threat_model"] == "feature inversion" and doc["roles"] == ["member", "nonmember"]
    by_key = {(s["arch"], s["condition"], s["tap"]): s for s in doc["summaries"]}
    assert set(by_key) == {
        ("unet", c, t) for c in ("trained", "untrained") for t in ("bottleneck+skips", "skip0")
    }
    s = by_key[("unet", "trained", "skip0")]
    # members: the private subjects the victim took gradient steps on (not its validation subjects)
    fitted = [
        sid
        for f in study.read_splits()["folds"]
        for sid in read_json(study.segmenter_stem("skull_stripped", f["fold"], "unet").with_suffix(".json"))[
            "fitted_on"
        ]
    ]
    assert 0 < len(fitted) < 9
    assert s["members"]["n"] == len(fitted) and s["nonmembers"]["n"] == 9 and s["n_candidates"] == 9
    assert s["member_minus_nonmember"]["n_pairs"] == len(fitted)
    assert s["beyond_paper"] is True
    assert s["untrained_over_trained"]["top1_trained"] == s["members"]["top1"]
    for key in ("mask_shape_top1", "common_mask_top1", "mean_image_top1"):
        assert 0 <= s["baselines"][key] <= 9
    # the mean image is one image per fold: at most one identification per fold (3 folds)
    assert s["baselines"]["mean_image_top1"] <= 3
    files = {p.name for p in (study.evaluation_dir / "controls").iterdir()}
    assert files == {"controls.json", "per_subject.csv", "controls.md"}
    rows = (study.evaluation_dir / "controls" / "per_subject.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * (len(fitted) + 9)  # header + 4 experiments x (members + 9 non-members)
    assert any("[feature inversion]" in v for v in doc["verdicts"])


def test_membership_inference_runs_per_fold_and_pools(study: StudyFolder) -> None:
    from napari_invert.report.evaluate import _membership, membership_verdicts
    from napari_invert.study.results import StudyResults

    for fold in study.read_splits()["folds"]:
        doc = read_json(study.membership_json("skull_stripped", fold["fold"], "unet"))
        assert doc["threat_model"] == "training-data leakage"
        truth = {row["subject_id"]: row["member"] for row in doc["subjects"]}
        seg = read_json(study.segmenter_stem("skull_stripped", fold["fold"], "unet").with_suffix(".json"))
        assert set(seg["fitted_on"]) | set(seg["validated_on"]) == set(fold["private"])
        # members: what the victim took gradient steps on; its validation subjects are neither
        assert truth == {**{s: True for s in seg["fitted_on"]}, **{s: False for s in fold["holdout"]}}
        assert set(doc["attacks"]) == {"loss_threshold", "dice_threshold", "lira_offline", "lira_global"}
    pooled = _membership(StudyResults(study.root), lambda _msg: None)
    assert set(pooled) == {"skull_stripped/unet"}  # no membership run on the untrained control dir
    assert (
        pooled["skull_stripped/unet"]["n_nonmembers"] == 9
        and 0 < pooled["skull_stripped/unet"]["n_members"] < 9
    )
    (verdict,) = membership_verdicts(pooled)
    assert verdict.startswith("[training-data leakage] skull_stripped/unet: membership inference AUC")


def test_a_decoder_trained_elsewhere_is_refused(tmp_path, cohort_dir) -> None:
    config = _config(cohort_dir, controls={"untrained_victim": False}, membership={"enabled": False})
    folder = StudyRunner(config, tmp_path / "s", progress=False, folds=[0]).run()
    # a decoder trained on other subjects (fold 0's attack set) put where fold 1's belongs
    src = folder.decoder_stem("skull_stripped", 0, "unet", "skip0")
    dst = folder.decoder_stem("skull_stripped", 1, "unet", "skip0")
    dst.parent.mkdir(parents=True, exist_ok=True)
    for a, b in zip(checkpoint_paths(src), checkpoint_paths(dst)):
        shutil.copy(a, b)
    with pytest.raises(ConfigError, match=r"not trained with this study's settings.*fold.*trained_on"):
        StudyRunner(config, tmp_path / "s", progress=False, folds=[1]).run()


def test_nyul_is_refused_in_studies() -> None:
    data = copy.deepcopy(CONTROLS)
    data["cohort"]["path"] = "/nowhere"
    data["preprocess"]["normalisation"] = "nyul"
    with pytest.raises(ConfigError, match=r"nyul.*private"):
        parse_config(data)


# -- checkpoints --------------------------------------------------------------------------------------
def test_weights_and_json_from_different_saves_are_detected(tmp_path) -> None:
    stem = tmp_path / "ckpt"
    save_checkpoint(stem, {"w": torch.zeros(3)}, {"step": 1})
    old_json = checkpoint_paths(stem)[1].read_text()
    save_checkpoint(stem, {"w": torch.ones(3)}, {"step": 2})
    tensors, meta = load_checkpoint(stem)
    assert meta["step"] == 2 and torch.equal(tensors["w"], torch.ones(3))
    checkpoint_paths(stem)[1].write_text(old_json)  # a crash after the weights, before the JSON
    with pytest.raises(CheckpointError, match="different saves"):
        load_checkpoint(stem)
    # a description written before save ids existed still loads with its weights
    write_json_atomic(checkpoint_paths(stem)[1], {"format_version": 1, "step": 2})
    from safetensors.torch import save_file

    save_file({"w": torch.ones(3)}, str(checkpoint_paths(stem)[0]))
    assert load_checkpoint(stem)[1]["step"] == 2


def test_a_save_interrupted_between_weights_and_description_is_completed_on_load(tmp_path) -> None:
    """Ctrl-C (or a cancelled Ray task) after the new weights are in place but before their
    description is: the pending description is renamed over the old one on load."""
    from napari_invert.checkpoint import _pending_path

    stem, other = tmp_path / "ckpt", tmp_path / "other"
    save_checkpoint(stem, {"w": torch.zeros(3)}, {"step": 1})
    save_checkpoint(other, {"w": torch.ones(3)}, {"step": 2})
    weights, meta_path = checkpoint_paths(stem)
    # the state of save 2 of `stem` interrupted between its last two steps
    shutil.copy(checkpoint_paths(other)[0], weights)
    shutil.copy(checkpoint_paths(other)[1], _pending_path(meta_path))
    tensors, meta = load_checkpoint(stem)
    assert meta["step"] == 2 and torch.equal(tensors["w"], torch.ones(3))
    assert not _pending_path(meta_path).exists() and load_checkpoint(stem)[1]["step"] == 2
    # interrupted before its weights were written: the old pair stands, the next save goes on
    save_checkpoint(other, {"w": torch.full((3,), 7.0)}, {"step": 3})
    shutil.copy(checkpoint_paths(other)[1], _pending_path(meta_path))
    assert load_checkpoint(stem)[1]["step"] == 2
    save_checkpoint(stem, {"w": torch.full((3,), 4.0)}, {"step": 4})
    assert load_checkpoint(stem)[1]["step"] == 4 and not _pending_path(meta_path).exists()
    # a pending description of yet another save does not rescue a mismatched pair
    shutil.copy(checkpoint_paths(other)[0], weights)
    shutil.copy(meta_path, _pending_path(meta_path))  # save 4's description, not save 3's
    with pytest.raises(CheckpointError, match="different saves"):
        load_checkpoint(stem)


# -- statistics and baselines with known answers --------------------------------------------------------
def test_paired_difference_known_answers() -> None:
    b = np.linspace(0.2, 0.9, 8)
    d = paired_difference_interval(b + 0.1, b)
    assert d.difference == pytest.approx(0.1) and d.ci == pytest.approx((0.1, 0.1))
    assert d.p_value == pytest.approx(2 / 256)  # exact sign flips: only all-+ and all-- are as extreme
    same = paired_difference_interval(b, b)
    assert same.difference == 0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="equal"):
        paired_difference_interval(b, b[:-1])


def test_mask_shape_and_common_mask_known_answers() -> None:
    masks = np.zeros((3, 8, 8, 8), dtype=bool)
    masks[0, 1:5, 1:5, 1:5] = True
    masks[1, 2:7, 2:7, 2:7] = True
    masks[2, 3:8, 0:6, 1:4] = True
    recons = masks.astype(np.float32) * 0.8 + 0.1  # each recon is its own mask, brighter inside
    dice = mask_shape_similarity(recons, masks)
    np.testing.assert_allclose(np.diag(dice), 1.0)
    assert (dice[~np.eye(3, dtype=bool)] < 1).all()
    common = common_mask(masks[:2])
    assert common.sum() == 3**3 and common[2:5, 2:5, 2:5].all()
    with pytest.raises(ValueError, match="no voxel in common"):
        common_mask(np.stack([masks[0], ~masks[0]]))


def test_evaluation_leads_with_the_controls_and_names_both_threats(study: StudyFolder) -> None:
    from napari_invert.report import evaluate_study

    summary = evaluate_study(study.root, metrics=["ssim", "correlation"], progress=False, figures=False)
    assert summary.verdicts[0].startswith("[feature inversion]")
    assert any(v.startswith("[training-data leakage]") for v in summary.verdicts)
    assert all(v.startswith(("[feature inversion]", "[training-data leakage]")) for v in summary.verdicts)
    html = summary.layout.report_html.read_text(encoding="utf-8")
    assert '<section id="controls">' in html and '<section id="membership">' in html
    assert html.index('<section id="controls">') < html.index('<section id="membership">')
    assert "(beyond the paper)" in html  # skip0 and bottleneck+skips read more than the latent space
