"""Tests of napari_invert.report: evaluate_study on small synthetic study folders.

Real computation throughout (no mocks of the metrics): the synthetic studies of
:mod:`study_fixtures` have known answers (perfect reconstructions, reconstructions equal to
the prior, blurred + noisy reconstructions that are re-identifiable).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from study_fixtures import make_synthetic_study

from napari_invert.errors import ConfigError, DataError
from napari_invert.report import evaluate_study, paper
from napari_invert.report.tables import METRICS_CSV_COLUMNS, read_metrics_csv

N_SUBJECTS = 8
EXPERIMENTS = {
    ("unet", "bottleneck+skips"): (0.6, 0.03),
    ("unet", "bottleneck"): (2.0, 0.45),  # hard: not every subject is re-identified
    ("segnet", "bottleneck+indices"): (1.0, 0.06),
}
SIM_METRICS = ("correlation", "ssim", "ssim_global")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _temp_leftovers(directory: Path) -> list[Path]:
    """Files an interrupted atomic write would leave (``.<name>.<random><suffix>``)."""
    return [p for p in directory.rglob(".*") if p.is_file()]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = make_synthetic_study(tmp_path_factory.mktemp("study") / "s", N_SUBJECTS, experiments=EXPERIMENTS)
    summary = evaluate_study(root, progress=False)
    return root, summary


# -- files -----------------------------------------------------------------------------------
def test_every_output_file_exists(study: tuple[Path, object]) -> None:
    root, _ = study
    ev = root / "evaluation"
    for name in ("metrics.csv", "tables/identification.csv", "summary.json", "report.html"):
        assert (ev / name).is_file(), name
    for table in ("table1", "table2", "table3"):
        for ext in ("csv", "md"):
            assert (ev / "tables" / f"{table}.{ext}").is_file()
    for key in ("unet_bottleneck_skips", "unet_bottleneck", "segnet_bottleneck_indices"):
        for metric in SIM_METRICS:
            stem = ev / "similarity" / f"skull_stripped_{key}_{metric}"
            matrix = np.load(stem.with_suffix(".npy"))
            meta = json.loads(stem.with_suffix(".json").read_text())
            assert matrix.shape == (N_SUBJECTS, N_SUBJECTS)
            assert meta["rows"] == meta["columns"] == [f"S{i + 1:02d}" for i in range(N_SUBJECTS)]
        for fig in ("similarity", "ranks", "prior"):
            assert (ev / "figures" / f"{fig}_skull_stripped_{key}.png").is_file()
    for fig in ("reconstructions_skull_stripped.png", "training_skull_stripped.png"):
        assert (ev / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for metric in SIM_METRICS:
        assert np.load(ev / "similarity" / f"prior_skull_stripped_{metric}.npy").shape == (2, N_SUBJECTS)
    assert _temp_leftovers(ev) == []


def test_report_html_is_self_contained(study: tuple[Path, object]) -> None:
    root, summary = study
    text = (root / "evaluation" / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", text, re.IGNORECASE)
    images = re.findall(r"<img[^>]*src=\"([^\"]+)\"", text)
    assert len(images) >= 10 and all(src.startswith("data:image/png;base64,") for src in images)
    for needle in (
        "Table 1",
        "Table 2",
        "Table 3",
        "global",
        "windowed",
        "prior",
        "Verdict",
        "private subjects re-identified at top-1",
        "chance 1/8",
        "Subbanna",
    ):
        assert needle in text, needle
    assert summary.verdicts[0] in text.replace("&#x27;", "'")
    assert "Shattuck" not in text  # synthetic cohort, not LPBA40


# -- metrics.csv and the tables ------------------------------------------------------------------
def test_metrics_csv_rows(study: tuple[Path, object]) -> None:
    root, _ = study
    rows = _read_csv(root / "evaluation" / "metrics.csv")
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


def test_correlation_is_pearson_in_candidate_mask(study: tuple[Path, object]) -> None:
    root, _ = study
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


def test_table1_and_table3_match_metrics_csv(study: tuple[Path, object]) -> None:
    root, _ = study
    rows = _read_csv(root / "evaluation" / "metrics.csv")
    t1 = _read_csv(root / "evaluation" / "tables" / "table1.csv")
    t3 = _read_csv(root / "evaluation" / "tables" / "table3.csv")
    assert len(t1) == len(t3) == len(EXPERIMENTS)
    for line in t1:
        mine = [
            r
            for r in rows
            if (r["variant"], r["arch"], r["tap"]) == (line["variant"], line["arch"], line["tap"])
        ]
        for metric in SIM_METRICS:
            values = np.array([float(r["value"]) for r in mine if r["metric"] == metric])
            priors = np.array([float(r["prior_value"]) for r in mine if r["metric"] == metric])
            assert float(line[f"{metric}_mean"]) == pytest.approx(values.mean())
            assert float(line[f"{metric}_sd"]) == pytest.approx(values.std(ddof=1))
            assert float(line[f"{metric}_prior_mean"]) == pytest.approx(priors.mean())
        assert int(line["n"]) == N_SUBJECTS
    for line in t3:
        mine = [
            r
            for r in rows
            if (r["variant"], r["arch"], r["tap"]) == (line["variant"], line["arch"], line["tap"])
        ]
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


def test_table2_originals_vs_others(study: tuple[Path, object]) -> None:
    root, _ = study
    t2 = _read_csv(root / "evaluation" / "tables" / "table2.csv")
    sim = np.load(root / "evaluation" / "similarity" / "skull_stripped_unet_bottleneck_skips_ssim.npy")
    line = next(r for r in t2 if r["tap"] == "bottleneck+skips" and r["metric"] == "ssim")
    others = sim[~np.eye(N_SUBJECTS, dtype=bool)]
    assert float(line["originals_mean"]) == pytest.approx(np.diag(sim).mean())
    assert float(line["others_mean"]) == pytest.approx(others.mean())
    assert int(line["others_n"]) == N_SUBJECTS * (N_SUBJECTS - 1)
    assert float(line["originals_mean"]) > float(line["others_mean"])
    assert "0.50 ± 0.23" in (root / "evaluation" / "tables" / "table2.md").read_text(encoding="utf-8")


def test_prior_gain_positive_for_leaking_reconstructions(study: tuple[Path, object]) -> None:
    root, _ = study
    rows = read_metrics_csv(root / "evaluation" / "metrics.csv")
    good = [r for r in rows if r.tap == "bottleneck+skips"]
    assert good and all(r.gain > 0 for r in good)
    doc = json.loads((root / "evaluation" / "summary.json").read_text())
    exp = next(e for e in doc["experiments"] if e["tap"] == "bottleneck+skips")
    assert exp["metrics"]["ssim"]["gain_mean"] > 0.1
    assert exp["metrics"]["ssim"]["identification"]["top1"] == N_SUBJECTS


def test_dice_skipped_with_reason_without_checkpoint(study: tuple[Path, object]) -> None:
    root, summary = study
    assert "dice" in summary.skipped and "no segmenter checkpoint" in summary.skipped["dice"]
    assert not (root / "evaluation" / "tables" / "dice_per_subject.csv").exists()

    def no_nan(token: str) -> None:
        raise AssertionError(f"summary.json is not strict JSON ({token})")

    doc = json.loads((root / "evaluation" / "summary.json").read_text(), parse_constant=no_nan)
    assert "no segmenter checkpoint" in doc["skipped"]["dice"]
    assert doc["data_range"]["skull_stripped"] == pytest.approx(1.0)  # max - min of the originals
    assert "Not computed" in (root / "evaluation" / "report.html").read_text(encoding="utf-8")


# -- known answers -------------------------------------------------------------------------------
def test_perfect_reconstruction_and_prior_reconstruction(tmp_path: Path) -> None:
    """recon = original: top-1 = n, SSIM = MCC = 1; recon = prior: zero gain."""
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=6,
        shape=(16, 16, 16),
        with_curves=False,
        experiments={("unet", "bottleneck+skips"): (0.0, 0.0), ("segnet", "bottleneck"): "prior"},
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
    t3 = {r["arch"]: r for r in _read_csv(root / "evaluation" / "tables" / "table3.csv")}
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
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=6,
        shape=(16, 16, 16),
        with_segmenters=True,
        with_curves=False,
        experiments={("unet", "bottleneck+skips"): (0.5, 0.02)},
    )
    summary = evaluate_study(
        root, metrics=["correlation", "dice"], device="cpu", progress=False, figures=False
    )
    assert "dice" not in summary.skipped
    rows = _read_csv(root / "evaluation" / "tables" / "dice_per_subject.csv")
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


# -- robustness ----------------------------------------------------------------------------------
def test_rerun_and_crash_leave_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=6,
        shape=(16, 16, 16),
        with_curves=False,
        experiments={("unet", "bottleneck"): (0.8, 0.05)},
    )
    evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    ev = root / "evaluation"
    first = (ev / "metrics.csv").read_bytes()
    report = (ev / "report.html").read_bytes()

    import napari_invert.report.evaluate as evaluate

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated crash while writing the tables")

    monkeypatch.setattr(evaluate, "table2", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate_study(root, metrics=["correlation", "ssim"], progress=False, figures=False)
    assert _temp_leftovers(ev) == []
    assert (ev / "report.html").read_bytes() == report  # untouched
    monkeypatch.undo()
    evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    assert (ev / "metrics.csv").read_bytes() == first
    assert "<img" not in (ev / "report.html").read_text(encoding="utf-8")
    assert _temp_leftovers(ev) == []


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a study folder"):
        evaluate_study(tmp_path, progress=False)
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=4,
        shape=(16, 16, 16),
        with_curves=False,
        experiments={("unet", "bottleneck"): (0.5, 0.05)},
    )
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate_study(root, metrics=["psnr"], progress=False)
    with pytest.raises(ConfigError, match="deformation"):
        evaluate_study(root, deformation="some", progress=False)


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
    t3 = _read_csv(root / "evaluation" / "tables" / "table3.csv")[0]
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


# -- issue 13 item 12: evaluation/ grouped, paths from StudyFolder, old layout still readable ---------
def test_evaluation_folder_is_grouped(study: tuple[Path, object]) -> None:
    from napari_invert.study.layout import StudyFolder

    root, summary = study
    ev = root / "evaluation"
    loose = sorted(p.name for p in ev.iterdir() if p.is_file())
    assert loose == ["metrics.csv", "report.html", "summary.json"]
    assert {p.name for p in ev.iterdir() if p.is_dir()} >= {"similarity", "tables", "figures"}
    layout = StudyFolder(root).evaluation
    for e in summary.experiments:
        x = e.experiment
        for metric in SIM_METRICS:
            path = layout.similarity(x.variant, x.arch, x.tap, metric)
            assert path.parent == ev / "similarity" and path.is_file() and path.with_suffix(".json").is_file()
    doc = json.loads(layout.summary_json.read_text())
    assert doc["layout"] == 2
    written = {Path(f) for f in doc["files"]}
    assert all(len(p.parts) > 1 or p.name in loose for p in written)  # nothing else loose


def test_flat_layout_is_still_readable_and_replaced_on_rerun(tmp_path: Path) -> None:
    """A study evaluated before the grouped layout: readers find its loose matrices; a new
    evaluation writes the grouped layout and removes the loose files it replaces."""
    import shutil

    from napari_invert.study.layout import StudyFolder
    from napari_invert.study.results import (
        Experiment,
        count_similarity_matrices,
        load_similarity,
        read_metrics,
        similarity_path,
        stored_similarity_metrics,
    )
    from napari_invert.widgets import _study_data

    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=4,
        shape=(16, 16, 16),
        with_curves=False,
        experiments={("unet", "bottleneck+skips"): (0.5, 0.02), ("unet", "bottleneck"): (0.5, 0.02)},
    )
    evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    folder = StudyFolder(root)
    ev = folder.evaluation
    skips = Experiment("skull_stripped", "unet", "bottleneck+skips")
    grouped = similarity_path(folder, skips, "correlation")
    assert grouped == ev.similarity_dir / "skull_stripped_unet_bottleneck_skips_correlation.npy"
    expected = np.load(grouped)
    # turn it into the flat layout of older versions
    for p in sorted(ev.similarity_dir.iterdir()):
        shutil.move(p, ev.root / (p.name if p.name.startswith("prior_") else "similarity_" + p.name))
    ev.similarity_dir.rmdir()
    shutil.move(ev.identification_csv, ev.root / "identification.csv")
    assert (
        similarity_path(folder, skips, "correlation")
        == ev.root / "similarity_skull_stripped_unet_bottleneck_skips_correlation.npy"
    )
    sim = load_similarity(similarity_path(folder, skips, "correlation"), ["x"], "correlation")
    np.testing.assert_array_equal(sim.matrix, expected)
    assert sim.rows == sim.columns == ("S01", "S02", "S03", "S04")
    # the bottleneck matrix is not mistaken for the bottleneck+skips one (prefix of its name)
    assert stored_similarity_metrics(folder, Experiment("skull_stripped", "unet", "bottleneck")) == [
        "correlation"
    ]
    assert read_metrics(folder).lookup("S01", skips)["correlation"].rank is not None
    assert count_similarity_matrices(folder) == 2
    # the widgets use these very functions
    assert _study_data.similarity_path is similarity_path and _study_data.read_metrics is read_metrics
    evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    assert ev.legacy_files() == []
    assert similarity_path(folder, skips, "correlation") == grouped
    assert count_similarity_matrices(folder) == 2


# -- issue 13 item 13: table of contents, section builders ----------------------------------------------
def test_report_has_table_of_contents_linking_every_section(study: tuple[Path, object]) -> None:
    root, _ = study
    text = (root / "evaluation" / "report.html").read_text(encoding="utf-8")
    toc = re.search(r'<nav class="toc">(.*?)</nav>', text, re.S)
    assert toc is not None
    links = re.findall(r'href="#([^"]+)"', toc.group(1))
    ids = re.findall(r'<section id="([^"]+)">', text)
    assert links == ids and len(ids) >= 8
    for needed in ("verdict", "tables", "identification", "similarity", "ranks", "splits", "config"):
        assert needed in ids
    assert text.index('<nav class="toc">') < text.index('<section id="verdict">')


def test_a_section_is_a_builder(study: tuple[Path, object]) -> None:
    """A new section = a function returning a Section, added to the builders' list."""
    from napari_invert.report.html import SECTION_BUILDERS, Section, build_report
    from napari_invert.study.results import StudyResults

    root, summary = study

    def extra_section(ctx):  # what a new report/<concern>.py provides
        return Section("extra", "An extra section", f"<p>{len(ctx.summary.experiments)} experiments</p>")

    text = build_report(StudyResults(root), summary, [], [], [*SECTION_BUILDERS, extra_section])
    assert '<a href="#extra">An extra section</a>' in text
    assert '<section id="extra"><h2>An extra section</h2>' in text and "<p>3 experiments</p>" in text


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
    from napari_invert.report.dice import BARELY_SEGMENTS_MARGIN, DiceBaseline, barely_segments_warnings

    good = DiceBaseline("skull_stripped", "unet", 0.70, 0.35, 0.05, 10)
    bad = DiceBaseline("skull_stripped", "segnet", 0.35 + BARELY_SEGMENTS_MARGIN / 2, 0.35, 0.05, 10)
    warnings = barely_segments_warnings([good, bad])
    assert len(warnings) == 1 and "SegNet (skull_stripped) 0.40 vs 0.35" in warnings[0]
    assert "U-Net" not in warnings[0]
    assert barely_segments_warnings([good]) == []
    # the untrained-victim control never segments by design: it is not warned about
    control = DiceBaseline(**{**bad.__dict__, "arch": "unet@untrained"})
    assert barely_segments_warnings([good, control]) == []


def test_untrained_victims_raise_the_banner_and_dice_figure_fits_the_page(tmp_path: Path) -> None:
    pytest.importorskip("napari_invert.models")
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=6,
        shape=(16, 16, 16),
        with_segmenters=True,  # untrained (seeded) victims: they do not segment
        with_curves=False,
        experiments={
            ("unet", "bottleneck+skips"): (0.5, 0.02),
            ("unet", "bottleneck"): (0.5, 0.02),
            ("segnet", "bottleneck+indices"): (0.5, 0.02),
            ("segnet", "bottleneck"): (0.5, 0.02),
        },
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


# -- issue 13 item 8: evaluation.space = native --------------------------------------------------------
def _native_study(tmp_path: Path) -> tuple[Path, object]:
    """A study whose model grid (2 mm) comes from a real source cohort at 1 mm (LAS, offset origin).

    ``unet bottleneck``: the model-grid reconstruction is the model-grid original, its native
    file the data layer's upsampling of it (as the runner writes it); ``segnet bottleneck``:
    its native file is the native skull-stripped original itself (a perfect native answer).
    """
    from napari_invert.config import PreprocessConfig, dump_config, load_config
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.nifti import save_nifti
    from napari_invert.data.prepare import prepare_cohort
    from napari_invert.study.layout import StudyFolder

    rng = np.random.default_rng(3)
    src = tmp_path / "cohort"
    native_affine = np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, -11.0], [0, 0, 1.0, -12.5], [0, 0, 0, 1]])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij"))
    natives = {}
    for i in range(4):
        sid = f"S{i + 1:02d}"
        mask = np.sum((grid / rng.uniform(0.7, 0.85, 3)[:, None, None, None]) ** 2, axis=0) <= 1
        from scipy import ndimage

        image = 8.0 * ndimage.gaussian_filter(rng.standard_normal((24, 24, 24)), 2.0) + 2.0 * mask
        save_nifti(src / "images" / f"{sid}.nii.gz", image.astype(np.float32), native_affine)
        save_nifti(src / "masks" / f"{sid}.nii.gz", mask.astype(np.uint8), native_affine)
        natives[sid] = (np.where(mask, image, 0).astype(np.float32), mask)
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=4,
        shape=(12, 12, 12),
        with_curves=False,
        experiments={("unet", "bottleneck"): (0.0, 0.0), ("segnet", "bottleneck"): (0.0, 0.0)},
    )
    folder = StudyFolder(root)
    pre = PreprocessConfig(voxel_mm=2.0, crop_to_mask=False, normalisation="none", cache=False)
    prepared = prepare_cohort(Cohort.from_path(src, kind="folder"), pre, 4, "skull_stripped", progress=False)
    assert prepared.shape == (12, 12, 12)
    by_id = {s.subject_id: s for s in prepared.subjects}
    splits = folder.read_splits()
    for f in splits["folds"]:
        k = f["fold"]
        prior = np.mean([by_id[s].image for s in f["attack"]], axis=0).astype(np.float32)
        save_nifti(folder.prior("skull_stripped", k), prior, prepared.affine)
        for sid in f["private"]:
            s = by_id[sid]
            for arch in ("unet", "segnet"):
                save_nifti(folder.recon("skull_stripped", k, arch, "bottleneck", sid), s.image, s.affine)
            up, aff = s.to_native(s.image, order=1)
            save_nifti(folder.recon_native("skull_stripped", k, "unet", "bottleneck", sid), up, aff)
            save_nifti(
                folder.recon_native("skull_stripped", k, "segnet", "bottleneck", sid), natives[sid][0], aff
            )
    for s in prepared.subjects:
        save_nifti(folder.original("skull_stripped", s.subject_id), s.image, s.affine)
        save_nifti(folder.mask("skull_stripped", s.subject_id), s.mask.astype(np.uint8), s.affine)
    doc = folder.read_cohort()
    doc.update(root=str(src), kind="folder", affine=np.asarray(prepared.affine).tolist())
    from napari_invert._io import write_json_atomic, write_text_atomic

    write_json_atomic(folder.cohort_path, doc)
    config = load_config(folder.config_path)
    config = config.model_copy(
        update={
            "preprocess": pre,
            "evaluation": config.evaluation.model_copy(update={"space": "native"}),
        }
    )
    write_text_atomic(folder.config_path, dump_config(config))
    return root, natives


def test_native_space_scores_true_pairs_on_the_native_grid(tmp_path: Path) -> None:
    from napari_invert.report.native import NATIVE_CSV_COLUMNS, model_to_native

    root, natives = _native_study(tmp_path)
    summary = evaluate_study(root, metrics=list(SIM_METRICS), progress=False, figures=False)
    native = summary.native
    assert native is not None and "native" not in summary.skipped
    assert native.metrics == ["correlation", "ssim_global", "ssim"]
    assert len(native.rows) == 4 * 2 * 3
    for r in native.rows:
        assert r.native_shape == (24, 24, 24) and r.native_voxel_mm == (1.0, 1.0, 1.0)
        assert r.model_value == pytest.approx(1.0, abs=1e-6)  # perfect on the model grid
        if r.arch == "segnet":  # the native original itself: perfect on the native grid too
            assert r.native_value == pytest.approx(1.0, abs=1e-6), r
        else:  # upsampled 2 mm answer: good but not perfect at 1 mm
            assert 0.0 < r.native_value < 0.99, r
        assert r.native_prior_value < r.native_value
    # the prior is carried onto the native grid through the affines as the data layer does it
    import nibabel as nib

    from napari_invert.study.layout import StudyFolder

    folder = StudyFolder(root)
    sid = "S01"
    fold = summary.experiments[0].row_folds[summary.experiments[0].row_ids.index(sid)]
    model = nib.load(folder.original("skull_stripped", sid))
    up = nib.load(folder.recon_native("skull_stripped", fold, "unet", "bottleneck", sid))
    mine = model_to_native(np.asarray(model.dataobj), model.affine, up.affine, up.shape)
    inside = natives[sid][1]
    np.testing.assert_allclose(mine[inside], np.asarray(up.dataobj)[inside], atol=1e-4)
    # the windowed SSIM (computed on the mask's box) is the whole volume's, and so are the others
    from napari_invert import metrics as M

    native_image = natives[sid][0]
    got = {r.metric: r.native_value for r in native.rows if (r.subject_id, r.arch) == (sid, "unet")}
    L = summary.data_range["skull_stripped"]
    upsampled = np.asarray(up.dataobj)
    assert got["ssim"] == pytest.approx(M.ssim_windowed(upsampled, native_image, L, mask=inside), abs=1e-5)
    assert got["ssim_global"] == pytest.approx(M.ssim_global(upsampled, native_image, inside, L), abs=1e-9)
    assert got["correlation"] == pytest.approx(
        np.corrcoef(upsampled[inside], native_image[inside])[0, 1], abs=1e-6
    )
    # files, table beside the model grid, report section
    layout = folder.evaluation
    rows = _read_csv(layout.native_scores_csv)
    assert tuple(rows[0]) == NATIVE_CSV_COLUMNS and len(rows) == 24
    md = layout.table("native", "md").read_text(encoding="utf-8")
    assert "model grid" in md and "native grid" in md
    assert "22 mm on the model grid and 11 mm on the native grid" in md  # 11-voxel window at 2 / 1 mm
    text = layout.report_html.read_text(encoding="utf-8")
    assert '<section id="native">' in text and '<a href="#native">' in text
    assert not any("not implemented" in n for n in summary.notes)
    doc = json.loads(layout.summary_json.read_text())
    assert doc["native"]["experiments"]["skull_stripped/segnet/bottleneck"]["ssim"][
        "native_mean"
    ] == pytest.approx(1.0)


def test_native_space_without_the_source_cohort_says_why(tmp_path: Path) -> None:
    root, _ = _native_study(tmp_path)
    (tmp_path / "cohort").rename(tmp_path / "moved")
    summary = evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    assert summary.native is None
    assert "source cohort not found" in summary.skipped["native"]
    assert "Not computed" in (root / "evaluation" / "report.html").read_text(encoding="utf-8")
