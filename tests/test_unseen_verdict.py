"""The victim's verdict on the fold's unseen subjects (issue 15): known answers of the paired
rule, the scores of a real network, and how the study's one check weighs it against the
validation verdict."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_convergence import _fake_study, cohort, tiny

from napari_invert._io import read_json
from napari_invert.config import TrainConfig
from napari_invert.metrics.dice import mean_dice
from napari_invert.models import train_segmenter
from napari_invert.models.factory import predict
from napari_invert.models.validation import MEMORISED_IMPLICATIONS, VERDICT_IMPLICATIONS
from napari_invert.study.convergence import (
    format_convergence_table,
    format_victim_check,
    summarise_convergence,
    victim_segmentation_check,
)
from napari_invert.study.unseen_test import (
    TEST_FORMAT,
    attach_unseen_test,
    failure_mode,
    score_on_unseen,
    unseen_test_is_current,
    unseen_verdict,
)


def test_unseen_verdict_known_answers() -> None:
    good = unseen_verdict([0.8, 0.7], [0.6, 0.6], min_dice=0.3, min_gain=0.05)
    assert good["segments"] is True and good["n"] == 2
    assert good["mean_gain"] == pytest.approx(0.15) and good["mean_baseline"] == pytest.approx(0.6)
    lo, hi = good["gain_ci95"]  # bootstrap means of the gains {0.2, 0.1}
    assert 0.1 - 1e-12 <= lo <= hi <= 0.2 + 1e-12
    assert "2 unseen subjects" in good["reason"] and "0.60" in good["reason"]

    near = unseen_verdict([0.63, 0.63, 0.63], [0.6, 0.6, 0.6], min_dice=0.3, min_gain=0.05)
    assert (
        near["segments"] is False
        and "not clearly above" in near["reason"]
        and "needs +0.05" in near["reason"]
    )
    assert near["gain_ci95"] == pytest.approx([0.03, 0.03])

    low = unseen_verdict([0.25], [0.0], min_dice=0.3, min_gain=0.05)
    assert low["segments"] is False and "below the threshold 0.30" in low["reason"]

    # a subject without a finite score drops out as a pair
    assert unseen_verdict([0.8, math.nan], [0.6, 0.6], 0.3, 0.05)["n"] == 1
    assert unseen_verdict([math.nan], [0.6], 0.3, 0.05)["segments"] is None
    with pytest.raises(ValueError, match="baseline"):
        unseen_verdict([0.8, 0.7], [0.6], 0.3, 0.05)


def test_failure_mode_tells_memorised_from_learned_little() -> None:
    assert failure_mode(False, 0.80, 0.60, min_gain=0.05) == "memorised"  # fits its training set only
    assert failure_mode(False, 0.62, 0.60, min_gain=0.05) == "learned_little"
    assert failure_mode(False, None, 0.60, min_gain=0.05) == "learned_little"  # not scored: the old text
    assert failure_mode(True, 0.80, 0.60, min_gain=0.05) is None  # it segments: no failure
    assert failure_mode(None, 0.80, 0.60, min_gain=0.05) is None


def test_score_on_unseen_scores_the_network_and_the_atlas() -> None:
    images, labels = cohort(4)
    model = tiny()
    test = score_on_unseen(model, [labels[0]], images[:2], labels[:2], ["a", "b"], 0.3, 0.05)
    assert test["subjects"] == ["a", "b"] and test["n"] == 2
    # the atlas of one subject's labels scored on that same subject is perfect
    assert test["baseline_dice"][0] == pytest.approx(1.0)
    assert test["baseline_dice"][1] == pytest.approx(mean_dice(labels[0], labels[1], 3))
    for img, lab, got in zip(images[:2], labels[:2], test["dice"]):
        assert got == pytest.approx(mean_dice(predict(model, img), lab, 3))
    assert test["mean_gain"] == pytest.approx(np.mean(test["dice"]) - np.mean(test["baseline_dice"]))
    with pytest.raises(ValueError, match="differ in number"):
        score_on_unseen(model, [labels[0]], images[:2], labels[:1], ["a", "b"], 0.3, 0.05)
    assert test["fitted_dice"] == [] and test["generalisation_gap"] is None

    # with its training images it is also scored on the subjects it trained on
    both = score_on_unseen(
        model, labels[2:4], images[:2], labels[:2], ["a", "b"], 0.3, 0.05, train_images=images[2:4]
    )
    for img, lab, got in zip(images[2:4], labels[2:4], both["fitted_dice"]):
        assert got == pytest.approx(mean_dice(predict(model, img), lab, 3))
    assert both["generalisation_gap"] == pytest.approx(np.mean(both["fitted_dice"]) - both["mean_dice"])
    assert both["failure"] == failure_mode(
        both["segments"], both["mean_fitted_dice"], both["mean_dice"], 0.05
    )
    with pytest.raises(ValueError, match="train_images"):
        score_on_unseen(
            model, labels[2:4], images[:2], labels[:2], ["a", "b"], 0.3, 0.05, train_images=images[:1]
        )


def test_the_unseen_test_decides_and_says_when_it_overrules_validation(tmp_path: Path) -> None:
    folder = _fake_study(tmp_path / "study")  # unet segments on validation, segnet does not
    unet_path = folder.segmenter_convergence("skull_stripped", 0, "unet")
    segnet_path = folder.segmenter_convergence("skull_stripped", 0, "segnet")
    ids = [f"U{i}" for i in range(5)]

    def block(victim: list[float], baseline: list[float]) -> dict:
        return {
            "format": TEST_FORMAT,
            "subjects": ids,
            "dice": victim,
            "baseline_dice": baseline,
            **unseen_verdict(victim, baseline, 0.3, 0.05),
        }

    # segnet: flagged on its single validation subject, clearly above the atlas on 5 unseen ones
    record = attach_unseen_test(segnet_path, block([0.7] * 5, [0.6] * 5))
    assert unseen_test_is_current(record, ids) and not unseen_test_is_current(record, ids[:4])
    older = {**record, "test": {**record["test"], "format": TEST_FORMAT - 1}}
    assert not unseen_test_is_current(older, ids)  # an older block is recomputed
    check = victim_segmentation_check(folder)
    assert check["ok"] and [r["arch"] for r in check["overruled"]] == ["segnet"]
    assert "the validation score flagged skull_stripped fold 0 segnet" in format_victim_check(check)
    by_arch = {r["arch"]: r for r in summarise_convergence(folder) if r["network"] == "victim"}
    assert by_arch["segnet"]["judged_on"] == "unseen" and by_arch["segnet"]["validation_segments"] is False
    assert by_arch["segnet"]["test_score"] == pytest.approx(0.7) and by_arch["segnet"]["n_test"] == 5
    assert by_arch["unet"]["judged_on"] == "validation"
    table = format_convergence_table(list(by_arch.values()))
    assert "0.700" in table and "yes (valid.)" in table

    # unet: passes validation, but on the unseen subjects it is no better than the atlas
    attach_unseen_test(unet_path, block([0.61, 0.62, 0.6, 0.61, 0.61], [0.6] * 5))
    check = victim_segmentation_check(folder)
    assert not check["ok"] and [r["arch"] for r in check["failing"]] == ["unet"]
    assert "fold 0 unet: Dice 0.610 vs baseline 0.600 on 5 unseen subjects (gain 95% CI [" in check["message"]
    assert "validation: best Dice" in check["message"]
    assert "noisy" not in check["message"]  # the verdict does not rest on one or two subjects
    assert VERDICT_IMPLICATIONS in check["message"] and "Memorised" not in check["message"]

    # the same victim, but Dice 0.80 on the subjects it trained on: it memorised them, and the
    # warning says membership inference on it is real leakage instead of "nothing to leak"
    memorised = block([0.61, 0.62, 0.6, 0.61, 0.61], [0.6] * 5)
    memorised.update(mean_fitted_dice=0.8, failure=failure_mode(False, 0.8, memorised["mean_dice"], 0.05))
    attach_unseen_test(unet_path, memorised)
    check = victim_segmentation_check(folder)
    assert check["failing"][0]["failure"] == "memorised"
    assert "Dice 0.800 on the subjects it trained on (memorised)" in check["message"]
    assert f"Memorised (fold 0 unet): {MEMORISED_IMPLICATIONS}" in check["message"]
    assert VERDICT_IMPLICATIONS not in check["message"]
    assert "needs spatial augmentation" in check["message"] and "more steps (" not in check["message"]
    assert "NO (memorised)" in format_convergence_table(summarise_convergence(folder))

    # a victim trained further (a new record) is judged on validation again until it is re-tested
    images, labels = cohort(6)
    torch.manual_seed(0)
    train_segmenter(
        tiny("unet"),
        images,
        labels,
        TrainConfig(steps=12, batch_size=2, lr=1e-2, validate_every=6, patience=100),
        "cpu",
        progress=False,
        convergence_path=unet_path,
    )
    assert "test" not in read_json(unet_path)
    (row,) = [r for r in summarise_convergence(folder) if r["arch"] == "unet" and r["network"] == "victim"]
    assert row["judged_on"] == "validation"
