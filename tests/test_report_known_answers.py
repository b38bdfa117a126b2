"""Report known answers: perfect and prior reconstructions, Dice and its trivial baseline,
deformation (real computation; see ``report_helpers``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from report_helpers import SIM_METRICS, read_csv, tiny_study
from study_fixtures import make_synthetic_study

from napari_invert.errors import ConfigError
from napari_invert.report import evaluate_study
from napari_invert.report.tables import read_metrics_csv


# -- known answers -------------------------------------------------------------------------------
def test_perfect_reconstruction_and_prior_reconstruction(tmp_path: Path) -> None:
    """recon = original: top-1 = n, SSIM = MCC = 1; recon = prior: zero gain."""
    root = tiny_study(
        tmp_path,
        {("unet", "bottleneck+skips"): (0.0, 0.0), ("segnet", "bottleneck"): "prior"},
        variants=("full_head",),
        cohort_kind="lpba40",
    )
    summary = evaluate_study(root, metrics=list(SIM_METRICS), progress=False, figures=False)
    assert summary.skipped == {}
    perfect = next(e for e in summary.experiments if e.experiment.arch == "unet")
    for metric in SIM_METRICS:
        assert perfect.identification[metric]["top1"] == 6
        np.testing.assert_allclose(perfect.true_values(metric), 1.0, atol=1e-6)
        assert np.all(perfect.ranks[metric] == 1)
    rows = read_metrics_csv(root / "evaluation" / "metrics.csv")
    prior_rows = [r for r in rows if r.arch == "segnet"]
    assert len(prior_rows) == 6 * len(SIM_METRICS)
    for r in prior_rows:
        assert r.value == pytest.approx(r.prior_value, abs=1e-9) and r.gain == pytest.approx(0.0, abs=1e-9)
    t3 = {r["arch"]: r for r in read_csv(root / "evaluation" / "tables" / "table3.csv")}
    assert int(t3["unet"]["ssim_global_top1"]) == 6
    html = (root / "evaluation" / "report.html").read_text(encoding="utf-8")
    assert "Shattuck" in html and "NeuroImage 2008" in html  # LPBA40 cohort -> cite it
    assert any("region='foreground'" in n for n in summary.notes)  # full_head inside the brain mask
    # the paper's with-skull region: all voxels of the original above a threshold
    fg = evaluate_study(root, metrics=["ssim_global"], progress=False, figures=False, region="foreground")
    exp = next(e for e in fg.experiments if e.experiment.arch == "unet")
    np.testing.assert_allclose(exp.true_values("ssim_global"), 1.0, atol=1e-6)
    assert json.loads((root / "evaluation" / "summary.json").read_text())["region"] == "foreground"
    with pytest.raises(ConfigError, match="region"):
        evaluate_study(root, metrics=["ssim"], progress=False, region="skull")


def test_dice_with_segmenter_checkpoints(tmp_path: Path) -> None:
    pytest.importorskip("napari_invert.models")
    root = tiny_study(
        tmp_path,
        {("unet", "bottleneck+skips"): (0.5, 0.02)},
        with_segmenters=True,
    )
    summary = evaluate_study(
        root, metrics=["correlation", "dice"], device="cpu", progress=False, figures=False
    )
    assert "dice" not in summary.skipped
    rows = read_csv(root / "evaluation" / "tables" / "dice_per_subject.csv")
    kinds = {(r["input"], r["role"], r["reference"]) for r in rows}
    assert {
        ("original", "private", "manual"),
        ("original", "attack", "manual"),
        ("reconstruction", "private", "manual"),
        ("reconstruction", "private", "original_segmentation"),
    } <= kinds
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    own = [r for r in rows if r["input"] == "original"]
    assert len(own) == 2 * 6  # every subject, once per fold (private in one, attack in the other)
    metrics = read_metrics_csv(root / "evaluation" / "metrics.csv")
    assert sum(r.metric == "dice" for r in metrics) == 6
    assert (root / "evaluation" / "tables" / "dice.md").is_file()
    assert "0.53 ± 0.14" in (root / "evaluation" / "tables" / "dice.md").read_text(encoding="utf-8")


# -- deformation -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_deformation_sample_and_cache(tmp_path: Path) -> None:
    """Sampled deformation on a tiny study: NaN for unsampled pairs, maps, cache reuse."""
    metrics_pkg = pytest.importorskip("napari_invert.metrics")
    if "register_pair" not in dir(metrics_pkg):
        pytest.skip("napari_invert.metrics.register_pair not available yet")
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=3,
        n_folds=3,
        shape=(20, 20, 20),
        with_curves=False,
        experiments={("unet", "bottleneck+skips"): (0.5, 0.02)},
        deformation_sample_size=1,
    )
    summary = evaluate_study(root, metrics=["ssim"], deformation="sample", progress=False)
    assert summary.deformation_mode == "sample" and "deformation" in summary.metrics
    ev = summary.experiments[0]
    m = ev.similarity["deformation"]
    assert m.shape == (3, 3)
    assert np.all(np.isfinite(m).sum(axis=1) == 2)  # true + 1 sampled
    assert np.all(np.isfinite(np.diag(m))) and np.all(m[np.isfinite(m)] >= 0)
    assert ev.candidates_per_row["deformation"] == 2
    assert np.all(np.isfinite(ev.prior_values["deformation"]))
    maps = sorted((root / "evaluation/deformation/skull_stripped_unet_bottleneck_skips").glob("*.nii.gz"))
    assert [p.name for p in maps] == ["S01.nii.gz", "S02.nii.gz", "S03.nii.gz"]
    magnitude = np.asarray(nib.load(maps[0]).dataobj)
    assert magnitude.shape == (20, 20, 20) and np.all(magnitude >= 0)
    rows = read_metrics_csv(root / "evaluation" / "metrics.csv")
    deformation_rows = [r for r in rows if r.metric == "deformation"]
    assert len(deformation_rows) == 3 and all(1 <= r.rank <= 2 for r in deformation_rows)
    for r in deformation_rows:  # lower is better: gain = prior - value
        assert r.gain == pytest.approx(r.prior_value - r.value)
    saved = np.load(
        root / "evaluation" / "similarity" / "skull_stripped_unet_bottleneck_skips_deformation.npy"
    )
    np.testing.assert_array_equal(np.isnan(saved), np.isnan(m))
    t3 = read_csv(root / "evaluation" / "tables" / "table3.csv")[0]
    assert int(t3["deformation_top1"]) == sum(r.rank == 1 for r in deformation_rows)
    assert "true + 1 sampled, chance 1/2" in (root / "evaluation" / "tables" / "table3.md").read_text(
        encoding="utf-8"
    )
    assert (
        root / "evaluation" / "figures" / "deformation_skull_stripped_unet_bottleneck_skips.png"
    ).is_file()
    # issue 13 item 9: the chance level of the sampled ranking everywhere, no paper column beside it
    md3 = (root / "evaluation" / "tables" / "table3.md").read_text(encoding="utf-8")
    assert "Paper deformation" not in md3 and "Deformation top-1 (of 2 sampled, chance 1/2)" in md3
    html_text = (root / "evaluation" / "report.html").read_text(encoding="utf-8")
    assert "chance 1/2 (true + 1 sampled)" in html_text and "no SyN iteration at the finest" in html_text
    assert '<section id="deformation">' in html_text
    doc = json.loads((root / "evaluation" / "summary.json").read_text())
    assert doc["deformation"]["candidates_per_row"] == 2 and doc["deformation"]["preset"] == "fast"

    cache = root / "evaluation" / "deformation" / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert len([p for p in before if p.suffix == ".json"]) == 3 * 2 + 3  # pairs + one prior per row
    again = evaluate_study(root, metrics=["ssim"], deformation="sample", progress=False, figures=False)
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert after == before  # nothing recomputed
    np.testing.assert_array_equal(again.experiments[0].similarity["deformation"], m)


# -- issue 13 item 13: trivial Dice baseline, the warning, the readable Dice figure --------------------
def test_majority_label_baseline_known_answers() -> None:
    from napari_invert.metrics import majority_baseline_dice, majority_label_map

    a = np.array([[0, 1, 2], [1, 1, 2]])
    b = np.array([[0, 1, 1], [1, 2, 2]])
    c = np.array([[2, 1, 1], [0, 2, 2]])
    atlas = majority_label_map([a, b, c], 3, chunk=4)  # chunks smaller than the volume
    np.testing.assert_array_equal(atlas, [[0, 1, 1], [1, 2, 2]])
    # vs a: class 1 Dice 2*2/(3+3), class 2 Dice 2*1/(2+2)
    np.testing.assert_allclose(majority_baseline_dice([a, b, c], [a, b], 3), [(2 / 3 + 0.5) / 2, 1.0])
    np.testing.assert_array_equal(majority_label_map([a, c], 3), [[0, 1, 1], [0, 1, 2]])  # ties: lower class
    with pytest.raises(ValueError):
        majority_label_map([a, np.zeros((3, 3), int)], 3)


def test_barely_segments_warning_threshold() -> None:
    from napari_invert.report.dice_baseline import (
        BARELY_SEGMENTS_MARGIN,
        DiceBaseline,
        barely_segments_warnings,
    )

    good = DiceBaseline("skull_stripped", "unet", 0.70, 0.35, 0.05, 10)
    bad = DiceBaseline("skull_stripped", "segnet", 0.35 + BARELY_SEGMENTS_MARGIN / 2, 0.35, 0.05, 10)
    warnings = barely_segments_warnings([good, bad])
    assert (
        len(warnings) == 1
        and f"SegNet (skull_stripped) {0.35 + BARELY_SEGMENTS_MARGIN / 2:.2f} vs 0.35" in warnings[0]
    )
    assert BARELY_SEGMENTS_MARGIN == 0.05  # the default min_dice_gain of the victims' own verdict
    # a study's own margin (segmenter_training.min_dice_gain) decides
    assert DiceBaseline("skull_stripped", "unet", 0.45, 0.35, 0.05, 10, min_gain=0.2).barely_segments
    assert not DiceBaseline("skull_stripped", "unet", 0.45, 0.35, 0.05, 10, min_gain=0.05).barely_segments
    assert "U-Net" not in warnings[0]
    assert barely_segments_warnings([good]) == []
    # the untrained-victim control never segments by design: it is not warned about
    control = DiceBaseline(**{**bad.__dict__, "arch": "unet@untrained"})
    assert barely_segments_warnings([good, control]) == []
    # it barely segments on unseen subjects, but fits the ones it trained on: it memorised them,
    # and the banner says membership inference on it is real leakage, not "nothing to leak"
    from napari_invert.models.validation import MEMORISED_IMPLICATIONS

    assert bad.failure == "learned_little" and "membership inference and the utility axis" in warnings[0]
    overfit = DiceBaseline(**{**bad.__dict__, "victim_trained_on": 0.80})
    assert overfit.failure == "memorised" and overfit.to_dict()["failure"] == "memorised"
    (text,) = barely_segments_warnings([good, overfit])
    assert "(memorised: 0.80 on its training subjects)" in text and MEMORISED_IMPLICATIONS in text
    assert "membership inference and the utility axis of the defences do not" not in text
    assert "needs spatial augmentation" in text and "train them longer" not in text
    assert "train them longer" in warnings[0]
    assert good.failure is None


def test_a_defended_result_of_another_format_skips_the_frontier_not_the_report(tmp_path: Path) -> None:
    from napari_invert.study.layout import StudyFolder

    root = tiny_study(tmp_path, {("unet", "bottleneck+skips"): (0.0, 0.0)}, variants=("full_head",))
    bad = StudyFolder(root).defended_result("full_head", 0, "unet", "none")
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"format_version": 99, "variant": "full_head", "fold": 0}))
    summary = evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    assert str(bad) in summary.skipped["frontier"] and "format version 99" in summary.skipped["frontier"]
    assert (root / "evaluation" / "report.html").is_file()


def test_pooled_and_per_fold_warnings_about_one_victim_make_one_banner() -> None:
    from napari_invert.report.dice_baseline import DiceBaseline, victim_warnings

    good = DiceBaseline("skull_stripped", "unet", 0.70, 0.35, 0.05, 10)
    bad = DiceBaseline("skull_stripped", "segnet", 0.37, 0.35, 0.05, 10)
    per_fold = {
        "ok": False,
        "failing": [{"variant": "skull_stripped", "fold": 2, "arch": "segnet"}],
        "message": "WARNING: 1 of 8 victim segmenters do not segment (...):\n"
        "  - skull_stripped fold 2 segnet: Dice 0.61 vs baseline 0.60",
    }
    # the same victim fails both checks: one banner, the per-fold one, with the pooled figures
    (text,) = victim_warnings([good, bad], per_fold)
    assert text.startswith("1 of 8 victim segmenters do not segment")
    assert text.endswith("SegNet (skull_stripped) 0.37 vs 0.35.") and "Folds pooled" in text
    # another victim fails per fold: the two banners name different victims, both are shown
    other = {**per_fold, "failing": [{"variant": "skull_stripped", "fold": 2, "arch": "unet"}]}
    both = victim_warnings([good, bad], other)
    assert len(both) == 2 and "barely segments" in both[1] and "Folds pooled" not in both[0]
    # only one check fails: its banner alone
    assert victim_warnings([good, bad], {"ok": True, "failing": [], "message": ""})[0].startswith(
        "The victim barely segments"
    )
    assert victim_warnings([good], per_fold) == [
        "1 of 8 victim segmenters do not segment (...):\n"
        "- skull_stripped fold 2 segnet: Dice 0.61 vs baseline 0.60"
    ]
    assert victim_warnings([good], {"ok": True, "failing": [], "message": ""}) == []


def test_untrained_victims_raise_the_banner_and_dice_figure_fits_the_page(tmp_path: Path) -> None:
    pytest.importorskip("napari_invert.models")
    root = tiny_study(
        tmp_path,
        {
            ("unet", "bottleneck+skips"): (0.5, 0.02),
            ("unet", "bottleneck"): (0.5, 0.02),
            ("segnet", "bottleneck+indices"): (0.5, 0.02),
            ("segnet", "bottleneck"): (0.5, 0.02),
        },
        with_segmenters=True,  # untrained (seeded) victims: they do not segment
        variants=("skull_stripped", "full_head"),
    )
    summary = evaluate_study(root, metrics=["correlation", "dice"], device="cpu", progress=False)
    assert len(summary.dice_baseline) == 4  # 2 variants x 2 architectures
    for b in summary.dice_baseline:
        assert 0.2 < b.baseline_unseen <= 1.0  # the tertile labels are partly predictable by position
        assert b.barely_segments
    text = (root / "evaluation" / "report.html").read_text(encoding="utf-8")
    assert text.count('<div class="warning">') == 1 and "barely segment" in text
    for victim in (
        "U-Net (skull_stripped)",
        "SegNet (skull_stripped)",
        "U-Net (full_head)",
        "SegNet (full_head)",
    ):
        assert victim in summary.warnings[0]
    assert text.index('<div class="warning">') < text.index('<nav class="toc">')
    dice_md = (root / "evaluation" / "tables" / "dice.md").read_text(encoding="utf-8")
    assert "trivial predictor" in dice_md
    doc = json.loads((root / "evaluation" / "summary.json").read_text())
    assert doc["dice_baseline"][0]["barely_segments"] is True and doc["warnings"]
    # the Dice figure is a grid, not a strip: readable at page width (the report is 1300 px wide)
    from PIL import Image

    with Image.open(root / "evaluation" / "figures" / "dice.png") as im:
        width, height = im.size
    assert width <= 1300 and height >= 600  # 4 panels in 2 rows of 2


def test_evaluation_uses_the_cores_of_the_studys_jobs() -> None:
    """The evaluation runs in one process: num_threads x jobs threads, capped by the CPUs."""
    from napari_invert.report.evaluate import evaluation_threads

    assert evaluation_threads(1, 2, cpus=2) == 2
    assert evaluation_threads(1, 4, cpus=2) == 2
    assert evaluation_threads(2, 1, cpus=8) == 2
    assert evaluation_threads(3, 2, cpus=16) == 6
    assert 1 <= evaluation_threads(1, 1) <= 1
