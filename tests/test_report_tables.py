"""Report tables: metrics.csv, Tables 1-3, the prior gain, the ranking rules, the deformation
labels (known answers, real computation; see ``report_helpers``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from report_helpers import EXPERIMENTS, N_SUBJECTS, SIM_METRICS, read_csv

from napari_invert.report import paper
from napari_invert.report.tables import METRICS_CSV_COLUMNS, read_metrics_csv


# -- metrics.csv and the tables ------------------------------------------------------------------
def test_metrics_csv_rows(report_study: tuple[Path, object]) -> None:
    root, _ = report_study
    rows = read_csv(root / "evaluation" / "metrics.csv")
    assert tuple(rows[0]) == METRICS_CSV_COLUMNS
    assert len(rows) == N_SUBJECTS * len(EXPERIMENTS) * len(SIM_METRICS)
    splits = json.loads((root / "splits.json").read_text())
    private_fold = {s: f["fold"] for f in splits["folds"] for s in f["private"]}
    for r in rows:
        assert int(r["fold"]) == private_fold[r["subject_id"]]
        assert float(r["gain"]) == pytest.approx(float(r["value"]) - float(r["prior_value"]))
        assert 1 <= int(r["rank"]) <= N_SUBJECTS
    # the true pair of the similarity matrix is the value in metrics.csv
    sim = np.load(root / "evaluation" / "similarity" / "skull_stripped_unet_bottleneck_skips_ssim_global.npy")
    got = {
        r["subject_id"]: float(r["value"])
        for r in rows
        if r["tap"] == "bottleneck+skips" and r["metric"] == "ssim_global"
    }
    assert np.allclose([got[f"S{i + 1:02d}"] for i in range(N_SUBJECTS)], np.diag(sim))


def test_correlation_is_pearson_in_candidate_mask(report_study: tuple[Path, object]) -> None:
    root, _ = report_study
    sim = np.load(
        root / "evaluation" / "similarity" / "skull_stripped_segnet_bottleneck_indices_correlation.npy"
    )
    splits = json.loads((root / "splits.json").read_text())
    fold = next(f["fold"] for f in splits["folds"] if "S03" in f["private"])
    recon = np.asarray(
        nib.load(root / f"skull_stripped/fold{fold}/segnet/bottleneck_indices/recon/S03.nii.gz").dataobj,
        dtype=np.float64,
    )
    orig = np.asarray(nib.load(root / "data/skull_stripped/originals/S05.nii.gz").dataobj, dtype=np.float64)
    mask = np.asarray(nib.load(root / "data/skull_stripped/masks/S05.nii.gz").dataobj) > 0
    expected = np.corrcoef(recon[mask], orig[mask])[0, 1]
    assert sim[2, 4] == pytest.approx(expected, abs=1e-6)


def _rows_of_experiment(rows: list[dict[str, str]], line: dict[str, str]) -> list[dict[str, str]]:
    """The metrics.csv rows of the experiment (variant, arch, tap) a table line describes."""
    key = (line["variant"], line["arch"], line["tap"])
    return [r for r in rows if (r["variant"], r["arch"], r["tap"]) == key]


def test_table1_and_table3_match_metrics_csv(report_study: tuple[Path, object]) -> None:
    root, _ = report_study
    rows = read_csv(root / "evaluation" / "metrics.csv")
    t1 = read_csv(root / "evaluation" / "tables" / "table1.csv")
    t3 = read_csv(root / "evaluation" / "tables" / "table3.csv")
    assert len(t1) == len(t3) == len(EXPERIMENTS)
    for line in t1:
        mine = _rows_of_experiment(rows, line)
        for metric in SIM_METRICS:
            values = np.array([float(r["value"]) for r in mine if r["metric"] == metric])
            priors = np.array([float(r["prior_value"]) for r in mine if r["metric"] == metric])
            assert float(line[f"{metric}_mean"]) == pytest.approx(values.mean())
            assert float(line[f"{metric}_sd"]) == pytest.approx(values.std(ddof=1))
            assert float(line[f"{metric}_prior_mean"]) == pytest.approx(priors.mean())
        assert int(line["n"]) == N_SUBJECTS
    for line in t3:
        mine = _rows_of_experiment(rows, line)
        for metric in SIM_METRICS:
            ranks = np.array([int(r["rank"]) for r in mine if r["metric"] == metric])
            assert int(line[f"{metric}_top1"]) == int(np.sum(ranks == 1))
            assert int(line[f"{metric}_top5"]) == int(np.sum(ranks <= 5))
            assert float(line[f"{metric}_mean_rank"]) == pytest.approx(ranks.mean())
    # the hard experiment is not perfect, the good one is
    by_tap = {line["tap"]: line for line in t3}
    assert int(by_tap["bottleneck+skips"]["ssim_top1"]) == N_SUBJECTS
    assert int(by_tap["bottleneck"]["correlation_top1"]) < N_SUBJECTS
    # parse the Markdown too: our numbers and the paper's, side by side
    md1 = (root / "evaluation" / "tables" / "table1.md").read_text(encoding="utf-8")
    skips = next(line for line in t1 if line["tap"] == "bottleneck+skips")
    assert f"{float(skips['ssim_global_mean']):.2f} ± {float(skips['ssim_global_sd']):.2f}" in md1
    assert "0.73 ± 0.12" in md1 and "0.60 ± 0.14" in md1  # U-Net bottleneck: the paper's attack
    assert "0.61 ± 0.12" not in md1  # SegNet is attacked through bottleneck+indices only: beyond the paper
    md3 = (root / "evaluation" / "tables" / "table3.md").read_text(encoding="utf-8")
    hard = by_tap["bottleneck"]
    assert f"{hard['correlation_top1']}/{N_SUBJECTS}" in md3
    assert f"30/{paper.PAPER_N}" in md3 and f"26/{paper.PAPER_N}" not in md3


def test_table2_originals_vs_others(report_study: tuple[Path, object]) -> None:
    root, _ = report_study
    t2 = read_csv(root / "evaluation" / "tables" / "table2.csv")
    sim = np.load(root / "evaluation" / "similarity" / "skull_stripped_unet_bottleneck_skips_ssim.npy")
    line = next(r for r in t2 if r["tap"] == "bottleneck+skips" and r["metric"] == "ssim")
    others = sim[~np.eye(N_SUBJECTS, dtype=bool)]
    assert float(line["originals_mean"]) == pytest.approx(np.diag(sim).mean())
    assert float(line["others_mean"]) == pytest.approx(others.mean())
    assert int(line["others_n"]) == N_SUBJECTS * (N_SUBJECTS - 1)
    assert float(line["originals_mean"]) > float(line["others_mean"])
    assert "0.50 ± 0.23" in (root / "evaluation" / "tables" / "table2.md").read_text(encoding="utf-8")


def test_prior_gain_positive_for_leaking_reconstructions(report_study: tuple[Path, object]) -> None:
    root, _ = report_study
    rows = read_metrics_csv(root / "evaluation" / "metrics.csv")
    good = [r for r in rows if r.tap == "bottleneck+skips"]
    assert good and all(r.gain > 0 for r in good)
    doc = json.loads((root / "evaluation" / "summary.json").read_text())
    exp = next(e for e in doc["experiments"] if e["tap"] == "bottleneck+skips")
    assert exp["metrics"]["ssim"]["gain_mean"] > 0.1
    assert exp["metrics"]["ssim"]["identification"]["top1"] == N_SUBJECTS


def test_dice_skipped_with_reason_without_checkpoint(report_study: tuple[Path, object]) -> None:
    root, summary = report_study
    assert "dice" in summary.skipped and "no segmenter checkpoint" in summary.skipped["dice"]
    assert not (root / "evaluation" / "tables" / "dice_per_subject.csv").exists()

    def no_nan(token: str) -> None:
        raise AssertionError(f"summary.json is not strict JSON ({token})")

    doc = json.loads((root / "evaluation" / "summary.json").read_text(), parse_constant=no_nan)
    assert "no segmenter checkpoint" in doc["skipped"]["dice"]
    assert doc["data_range"]["skull_stripped"] == pytest.approx(1.0)  # max - min of the originals
    assert "Not computed" in (root / "evaluation" / "report.html").read_text(encoding="utf-8")


def test_ranking_rules_with_sampled_and_undefined_pairs() -> None:
    """Known answers for the ranking of hand-built matrices (pessimistic ties, NaN pairs)."""
    from napari_invert.report.evaluate import _identification, _sample_columns

    truth = np.array([0, 1, 2])
    # lower is better (deformation); NaN = pair not registered (sample mode)
    m = np.array([[1.0, 2.0, np.nan], [np.nan, 3.0, 1.0], [2.0, np.nan, 2.0]])
    ranks, d = _identification(m, truth, higher=False, candidates_per_row=2, uncomputed_is_missing=True)
    assert ranks.tolist() == [1, 2, 2]  # row 2: a tie with the true pair counts against it
    assert d["top1"] == 1 and d["candidates_per_row"] == 2 and d["chance_top1"] == 0.5
    assert d["true_mean"] == pytest.approx(2.0) and d["other_mean"] == pytest.approx(5.0 / 3.0)
    # higher is better; NaN = undefined score (constant image) -> the worst
    s = np.array([[np.nan, 0.5, 0.2], [0.1, 0.9, 0.3], [0.4, 0.2, 0.8]])
    ranks, d = _identification(s, truth, higher=True, candidates_per_row=3, uncomputed_is_missing=False)
    assert ranks.tolist() == [3, 1, 1] and d["top1"] == 2 and d["undefined_true_scores"] == 1
    # identity: every reconstruction equals its original
    eye = np.eye(5) + 0.1
    ranks, d = _identification(eye, np.arange(5), True, 5, False)
    assert d["top1"] == 5 and d["mean_rank"] == 1.0
    # sampling is reproducible, always contains the true column, and has 1 + k entries
    cols = _sample_columns("S07", 3, 10, 4)
    assert cols == _sample_columns("S07", 3, 10, 4) and 3 in cols and len(cols) == 5
    assert _sample_columns("S07", 3, 4, 10) == [0, 1, 2, 3]


# -- issue 13 item 9: sampled deformation is labelled with its chance, not printed beside the paper ----
def test_table3_sampled_metric_has_chance_and_no_paper_column() -> None:
    from napari_invert.report.tables import MetricRow, table3
    from napari_invert.study.results import Experiment

    rows = [
        MetricRow(f"S{i}", 0, "skull_stripped", "unet", "bottleneck", m, 0.5, 0.4, 0.1, r)
        for i, (m, r) in enumerate([("ssim_global", 1), ("deformation", 1), ("deformation", 2)])
    ]
    exp = Experiment("skull_stripped", "unet", "bottleneck")
    full = table3(rows, {exp: 40})
    assert "Paper deformation" in full.columns and "24/40" in full.to_markdown()
    sampled = table3(rows, {exp: 40}, {"deformation": "true + 3 sampled, chance 1/4"}, {"deformation": 4})
    md = sampled.to_markdown()
    assert "Paper deformation" not in sampled.columns and "24/40" not in md
    assert "paper_deformation_top1" not in sampled.csv_columns
    assert "Deformation top-1 (of 4 sampled, chance 1/4)" in sampled.columns
    assert "30/40" in md  # the paper's SSIM column stays: those ranks are among all candidates
    assert any("among 4 candidates" in n for n in sampled.notes)
    assert sampled.csv_rows[0][sampled.csv_columns.index("deformation_candidates_per_row")] == 4


def test_fast_preset_is_described_where_it_is_chosen() -> None:
    from napari_invert.cli import build_parser
    from napari_invert.config import DeformationConfig
    from napari_invert.report.deformation import chance_text, deformation_settings, preset_text

    assert "no SyN iteration at the finest" in preset_text("fast")
    assert "finest" not in preset_text("paper")
    assert "NO SyN iteration at the finest" in DeformationConfig.model_fields["preset"].description
    ev = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    help_text = next(a.help for a in ev._actions if "--deformation" in a.option_strings)
    assert "NO SyN iteration at the finest" in help_text and "chance 1/(k+1)" in help_text
    cfg = DeformationConfig(mode="sample", sample_size=3)
    d = deformation_settings(cfg, "sample", 40)
    assert d["candidates_per_row"] == 4 and d["chance_top1"] == 0.25 and not d["comparable_with_paper"]
    assert chance_text(4, "sample") == "chance 1/4 (true + 3 sampled)"
    # the number and the backend are named: the default is the paper's non-linear part
    assert d["measure"] == "nonlinear" and "non-linear field after the affine" in d["measure_text"]
    assert d["preset_text"].startswith("ANTs preset 'fast'")
    fire = deformation_settings(
        DeformationConfig(mode="full", backend="fireants", measure="total"), "full", 40
    )
    assert (
        fire["preset_text"].startswith("FireANTs preset 'fast': affine (MI)")
        and "greedy" in fire["preset_text"]
    )
    assert fire["measure"] == "total" and "whole transform" in fire["measure_text"]
    with pytest.raises(ValueError, match="measure"):
        DeformationConfig(measure="affine")
