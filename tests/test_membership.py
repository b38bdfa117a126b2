"""Membership inference (threat model "training-data leakage") on a real tiny experiment.

A tiny U-Net is deliberately overfit on a few 16^3 volumes whose label maps are random blobs
independent of the image, so they can only be memorised: the victim fits its members and
not the held-out non-members, and every attack must separate them (AUC well above 0.5).
The same architecture at initialisation must not (AUC near 0.5). Signals, LiRA and the
threshold calibration are also checked against hand-computed answers.
"""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter

from napari_invert.config import MembershipConfig, SegmenterConfig, TrainConfig
from napari_invert.errors import CheckpointError, DataError
from napari_invert.identify.intervals import roc_auc
from napari_invert.membership import (
    ShadowSignals,
    SignalScores,
    calibrate_threshold,
    foreground_dice,
    member_score,
    pool_membership,
    run_attacks,
    run_membership_inference,
    score_volumes,
    shadow_assignment,
    train_shadows,
)
from napari_invert.models import build_segmenter, predict, predict_proba, train_segmenter
from napari_invert.report.membership import (
    membership_roc_figure,
    membership_section_html,
    membership_section_markdown,
)
from napari_invert.study.layout import StudyFolder

SEG = SegmenterConfig(architectures=["unet"], base_filters=4, levels=2, convs_per_level=1)
TRAIN = TrainConfig(steps=120, batch_size=2, lr=0.01, augment=False, checkpoint_every=60)
N_CLASSES = 3


@dataclass
class Subject:
    subject_id: str
    image: np.ndarray
    labels: np.ndarray


def make_subjects(prefix: str, n: int, seed: int, size: int = 16) -> list[Subject]:
    """Smooth-noise images with random blob label maps drawn independently of the image."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = gaussian_filter(rng.normal(size=(size,) * 3), 1.5)
        image = ((image - image.mean()) / image.std()).astype(np.float32)
        field = gaussian_filter(rng.normal(size=(size,) * 3), 2.0)
        labels = np.digitize(field, np.quantile(field, [0.5, 0.8])).astype(np.int64)
        out.append(Subject(f"{prefix}{i:02d}", image, labels))
    return out


def no_training(*args, **kwargs):
    raise AssertionError("a saved shadow or result was retrained")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    torch.manual_seed(0)
    members = make_subjects("M", 6, seed=1)
    nonmembers = make_subjects("N", 6, seed=2)
    attacker = make_subjects("A", 8, seed=3)
    victim = build_segmenter("unet", SEG, N_CLASSES)
    train_segmenter(
        victim, [s.image for s in members], [s.labels for s in members], TRAIN, "cpu", progress=False
    )
    folder = StudyFolder(tmp_path_factory.mktemp("study"))
    config = MembershipConfig(n_shadows=2, bootstrap=500, permutations=500, fpr=0.2)
    kwargs = dict(
        variant="skull_stripped",
        fold=0,
        arch="unet",
        victim=victim,
        members=members,
        nonmembers=nonmembers,
        attacker_subjects=attacker,
        train_config=TRAIN,
    )
    doc = run_membership_inference(folder, config, **kwargs)
    return {"doc": doc, "folder": folder, "config": config, "kwargs": kwargs}


# -- the experiment ---------------------------------------------------------------------------


def test_overfit_victim_leaks_membership(experiment) -> None:
    doc = experiment["doc"]
    assert doc["threat_model"] == "training-data leakage"
    assert doc["n_members"] == 6 and doc["n_nonmembers"] == 6 and doc["n_shadows"] == 2
    for name in ("loss_threshold", "dice_threshold", "lira_offline", "lira_global"):
        res = doc["attacks"][name]
        assert res["auc"] >= 0.9, (name, res["auc"])
        assert res["auc_ci"][0] > 0.5, (name, res["auc_ci"])
        assert res["auc_p_value"] < 0.05
    # calibrated on the attacker's own shadows, the loss threshold decides correctly
    assert doc["attacks"]["loss_threshold"]["decision"]["accuracy"] >= 0.8
    # members fit better: loss difference negative with an interval below zero
    diff = doc["signals"]["loss"]["members_minus_nonmembers"]
    assert diff["difference"] < 0 and diff["ci"][1] < 0
    # the untrained control is reported beside every attack
    assert set(doc["controls"]["untrained_victim"]["attacks"]) == set(doc["attacks"])
    # what n supports: with 6 non-members FPR moves in steps of 1/6, so FPR 0.2 is supported
    assert doc["support"]["supported"] and doc["support"]["min_nonzero_fpr"] == pytest.approx(1 / 6)


def test_result_files_and_per_subject_truth(experiment) -> None:
    folder, doc = experiment["folder"], experiment["doc"]
    json_path = folder.membership_json("skull_stripped", 0, "unet")
    csv_path = folder.membership_csv("skull_stripped", 0, "unet")
    assert json_path.is_file() and csv_path.is_file()
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 12
    truth = {r["subject_id"]: r["member"] for r in rows}
    assert truth == {**{f"M{i:02d}": "1" for i in range(6)}, **{f"N{i:02d}": "0" for i in range(6)}}
    # the AUC in the JSON is the AUC of the per-subject scores written beside it
    score = np.array([float(r["loss_threshold_score"]) for r in rows])
    member = np.array([r["member"] == "1" for r in rows])
    assert roc_auc(score[member], score[~member]) == pytest.approx(doc["attacks"]["loss_threshold"]["auc"])
    assert np.allclose(-np.log([float(r["loss"]) for r in rows]), score)
    for k in range(2):
        stem = folder.shadow_stem("skull_stripped", 0, "unet", k)
        assert stem.with_suffix(".safetensors").is_file() and stem.with_suffix(".json").is_file()
        assert not stem.with_name(stem.name + "_resume.json").exists()
    # shadows never trained on a candidate
    candidates = set(truth)
    assert all(not set(s["trained_on"]) & candidates for s in doc["shadows"])


def test_rerun_reuses_results_and_shadows(experiment, tmp_path: Path) -> None:
    folder, config, kwargs = experiment["folder"], experiment["config"], experiment["kwargs"]
    again = run_membership_inference(folder, config, **kwargs, train_fn=no_training)
    assert again == experiment["doc"]
    # a copy without its result: shadows are loaded (no training), same numbers
    copy = StudyFolder(tmp_path / "copy")
    shutil.copytree(folder.root, copy.root)
    copy.membership_json("skull_stripped", 0, "unet").unlink()
    redone = run_membership_inference(copy, config, **kwargs, train_fn=no_training)
    for name, res in experiment["doc"]["attacks"].items():
        assert redone["attacks"][name]["auc"] == pytest.approx(res["auc"])
    # different candidates: refused, never silently overwritten
    other = dict(kwargs, nonmembers=kwargs["nonmembers"][:5])
    with pytest.raises(DataError, match="other subjects or settings"):
        run_membership_inference(folder, config, **other)
    # shadows recorded for another split: refused
    stems = [copy.shadow_stem("skull_stripped", 0, "unet", k) for k in range(2)]
    with pytest.raises(CheckpointError, match="trained on other subjects"):
        train_shadows(kwargs["victim"], kwargs["attacker_subjects"], TRAIN, 2, stems, seed=123)


def test_pooling_report_and_figure(experiment, tmp_path: Path) -> None:
    doc = experiment["doc"]
    twin = {**doc, "fold": 1, "subjects": [{**r, "fold": 1} for r in doc["subjects"]]}
    pooled = pool_membership([doc, twin])
    assert pooled["threat_model"] == "training-data leakage"
    assert pooled["n_members"] == 12 and pooled["n_nonmembers"] == 12 and pooled["folds"] == [0, 1]
    for name, res in pooled["attacks"].items():
        # duplicating both groups leaves the Mann-Whitney AUC unchanged
        assert res["auc"] == pytest.approx(doc["attacks"][name]["auc"])
        assert [f["fold"] for f in res["per_fold"]] == [0, 1]
    assert "untrained_victim" in pooled["controls"]
    png = membership_roc_figure(tmp_path / "roc.png", {"unet": pooled})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = membership_section_markdown({"unet": pooled}, figure=png)
    html = membership_section_html({"unet": pooled}, figure_src="roc.png")
    auc = f"{pooled['attacks']['lira_offline']['auc']:.2f}"
    for text in (md, html):
        assert "training-data leakage" in text and "LiRA offline" in text and auc in text
        assert "untrained control AUC" in text


def test_untrained_victim_gives_chance_auc() -> None:
    torch.manual_seed(1)
    untrained = build_segmenter("unet", SEG, N_CLASSES)
    group_a, group_b = make_subjects("A", 30, seed=4), make_subjects("B", 30, seed=5)
    subjects = group_a + group_b
    scores = score_volumes(untrained, [s.image for s in subjects], [s.labels for s in subjects])
    attacks = run_attacks(scores, ["loss_threshold", "dice_threshold", "confidence_threshold"], None)
    member = np.arange(60) < 30
    for name, res in attacks.items():
        auc = roc_auc(res["score"][member], res["score"][~member])
        assert abs(auc - 0.5) < 0.2, (name, auc)
        assert res["decision"] is None  # no shadows, no calibrated threshold


# -- signals and attacks against hand-computed answers ------------------------------------------


def test_foreground_dice_hand_case() -> None:
    ref = np.array([0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 0, 2, 2, 1])
    # class 1: |P|=2 |R|=2 overlap 1 -> 0.5; class 2: |P|=2 |R|=3 overlap 2 -> 0.8
    assert foreground_dice(pred, ref, 3) == pytest.approx((0.5 + 0.8) / 2)
    assert foreground_dice(np.zeros(4, int), np.zeros(4, int), 3) == 1.0


def test_signals_match_independent_computations() -> None:
    torch.manual_seed(2)
    model = build_segmenter("unet", SEG, N_CLASSES)
    subjects = make_subjects("S", 2, seed=6)
    s = score_volumes(model, [x.image for x in subjects], [x.labels for x in subjects], ["a", "b"])
    monai_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    for i, subj in enumerate(subjects):
        with torch.no_grad():
            logits = model(torch.from_numpy(subj.image)[None, None])
        ref = float(monai_loss(logits, torch.from_numpy(subj.labels)[None, None]))
        assert s.loss[i] == pytest.approx(ref, rel=1e-4)
        prob = predict_proba(model, subj.image)
        true_prob = np.take_along_axis(prob, subj.labels[None], axis=0)
        assert s.confidence[i] == pytest.approx(float(true_prob.mean()), rel=1e-5)
        assert s.dice[i] == pytest.approx(foreground_dice(predict(model, subj.image), subj.labels, 3))


def test_member_score_scales() -> None:
    assert member_score("loss", np.array([math.exp(-2.0)]))[0] == pytest.approx(2.0)
    assert member_score("confidence", np.array([0.5]))[0] == pytest.approx(0.0)
    assert member_score("dice", np.array([0.8]))[0] == pytest.approx(math.log(4.0))


def test_shadow_assignment_complementary_pairs() -> None:
    a = shadow_assignment(9, 4, seed=0)
    assert a.shape == (4, 9)
    assert np.array_equal(a[1], ~a[0]) and np.array_equal(a[3], ~a[2])
    assert a[0].sum() == 4 and a[2].sum() == 4
    assert np.all(a.sum(axis=0) == 2)  # every subject IN exactly half the shadows
    assert np.array_equal(a, shadow_assignment(9, 4, seed=0))
    assert shadow_assignment(9, 3, seed=0)[2].sum() == 4


def test_calibrated_threshold_hand_case() -> None:
    assert calibrate_threshold(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == pytest.approx(2.5)
    # overlap: best cut keeps both INs above and one OUT: TPR 1 - FPR 0.5 at t in (1, 2]
    assert calibrate_threshold(np.array([2.0, 3.0]), np.array([1.0, 2.5])) == pytest.approx(1.5)


def _scores(ids: list[str], member_scores: list[float]) -> SignalScores:
    loss = np.exp(-np.asarray(member_scores, dtype=float))  # member_score("loss") = -log(loss)
    return SignalScores(ids, loss, np.full(len(ids), 0.5), np.full(len(ids), 0.5))


def test_lira_hand_case() -> None:
    cands = ["c0", "c1"]
    shadows = ShadowSignals(
        candidates=[_scores(cands, [0.0, 1.0]), _scores(cands, [2.0, 3.0])],  # OUT means 1, 2
        attack=[_scores(["a0", "a1"], [5.0, 1.0]), _scores(["a0", "a1"], [1.0, 5.0])],
        in_mask=np.array([[True, False], [False, True]]),
    )
    victim = _scores(cands, [3.0, 2.0])
    res = run_attacks(victim, ["lira_offline", "lira_global"], shadows, lira_signal="loss", fpr=0.05)
    cal = res["lira_offline"]["calibration"]
    # OUT spread pooled over candidates (ss 2 + 2, df 2); attack OUT groups have one value
    assert cal["sd_out"] == pytest.approx(math.sqrt(2.0)) and cal["sd_out_df"] == 2
    assert cal["delta"] == pytest.approx(4.0)  # IN 5 vs OUT 1 for both attacker subjects
    assert cal["sd_in"] == pytest.approx(math.sqrt(2.0))  # no IN spread estimable -> sd_out
    np.testing.assert_allclose(res["lira_offline"]["score"], [2 / math.sqrt(2), 0.0])
    # log N(3; 5, s) - log N(3; 1, s) = 0; log N(2; 6, s) - log N(2; 2, s) = -16 / (2 * 2)
    np.testing.assert_allclose(res["lira_global"]["score"], [0.0, -4.0], atol=1e-12)
    assert res["lira_offline"]["decision"].tolist() == [False, False]  # 1.41 < 1.645


def test_config_requires_shadows_for_lira() -> None:
    with pytest.raises(ValidationError, match="n_shadows must be >= 2"):
        MembershipConfig(n_shadows=1)
    assert MembershipConfig(n_shadows=0, attacks=["loss_threshold"]).n_shadows == 0
