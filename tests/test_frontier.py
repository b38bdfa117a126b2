"""The frontier: a tiny defended experiment end to end (train, retrain the attacker, measure,
table, figure, CLI), resumption, and the verdict on hand-made points."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tiny_inputs import demo_cohort_for, with_cohort

from napari_invert._io import read_json
from napari_invert.config import parse_config
from napari_invert.defences.frontier import Estimate, FrontierPoint, verdict
from napari_invert.study.defended import run_defended_study
from napari_invert.study.layout import StudyFolder

TINY = {
    "name": "tiny_defences",
    "cohort": {"kind": "demo", "n_subjects": 8, "seed": 3, "demo_voxel_mm": 8.0},
    "preprocess": {"voxel_mm": None, "variants": ["skull_stripped"]},
    "folds": 4,
    "holdout": "fold",  # 2 members / 2 held-out non-members / 4 attack subjects per fold
    "membership": {"n_shadows": 0, "attacks": ["loss_threshold", "dice_threshold"]},
    "segmenter": {"architectures": ["unet"], "base_filters": 4, "levels": 2, "convs_per_level": 1},
    "segmenter_training": {"steps": 4, "batch_size": 2, "checkpoint_every": 2},
    "attack": {
        "taps": {"unet": ["bottleneck+skips"]},
        "decoder_base_filters": 4,
        "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "augment": False},
    },
    "defences": [
        {"kind": "noise", "strengths": [1.0], "train": False},
        {"kind": "expose_less", "strengths": [1]},
        {"kind": "quantise", "strengths": [1], "train": False},
    ],
    "device": "cpu",
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def defended_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("defended")
    data = with_cohort(TINY, demo_cohort_for(TINY, root / "cohort"))
    study = root / "study"
    paths = run_defended_study(parse_config(data), study, folds=[0], progress=False)
    assert len(paths) == 4  # fold 0: the reference + 3 defences
    return study


def test_defended_experiments_retrain_the_attacker_and_measure_both_threats(defended_study: Path) -> None:
    folder = StudyFolder(defended_study)
    splits = folder.read_splits()["folds"][:1]
    for fold in splits:
        k = fold["fold"]
        for slug in ("none", "noise-1", "expose_less-1", "quantise-1"):
            r = read_json(folder.defended_result("skull_stripped", k, "unet", slug))
            assert r["defence"]["slug"] == slug
            # the attacker's decoder was trained against THIS victim, on its own subjects only
            meta = read_json(
                folder.defended_decoder_stem("skull_stripped", k, "unet", slug).with_suffix(".json")
            )
            assert meta["defence"] == slug and meta["trained_on"] == fold["attack"]
            # members are reconstructed and ranked among all 8 subjects, non-members too
            fi = r["feature_inversion"]
            assert fi["threat_model"] == "feature inversion" and fi["subjects"] == fold["private"]
            assert fi["n_candidates"] == 8 and len(fi["rank"]) == len(fold["private"]) == 2
            assert all(1 <= rank <= 8 for rank in fi["rank"])
            assert fi["top1"] == [int(rank == 1) for rank in fi["rank"]]
            assert len(fi["non_member_ssim_gain"]) == len(fold["holdout"]) == 2
            # utility on held-out subjects; membership inference members vs held-out non-members
            assert r["utility"]["subjects"] == fold["holdout"] and len(r["utility"]["dice"]) == 2
            tl = r["training_data_leakage"]
            assert tl["threat_model"] == "training-data leakage" and 0.0 <= tl["auc"] <= 1.0
            assert tl["non_members"] == fold["holdout"] and tl["attack"].startswith("loss_threshold")
            assert set(tl["attacks"]) == {"loss_threshold", "dice_threshold"}
            for sid in [*fold["private"], *fold["holdout"]]:
                assert folder.defended_recon("skull_stripped", k, "unet", slug, sid).is_file()
        # expose_less exposes no level-0 skip; the reference does
        assert read_json(folder.defended_result("skull_stripped", k, "unet", "expose_less-1"))["exposed"] == [
            "bottleneck",
            "skip1",
        ]
        assert "skip0" in read_json(folder.defended_result("skull_stripped", k, "unet", "none"))["exposed"]
        # inference-only noise reuses the reference's weights: no victim of its own
        assert (
            not folder.defended_segmenter_stem("skull_stripped", k, "unet", "noise-1")
            .with_suffix(".json")
            .exists()
        )
        assert (
            folder.defended_segmenter_stem("skull_stripped", k, "unet", "expose_less-1")
            .with_suffix(".json")
            .is_file()
        )
    # the main study's experiments are not polluted by the defended ones
    from napari_invert.study.results import StudyResults

    assert StudyResults(defended_study).experiments() == []


def test_rerun_skips_finished_experiments(defended_study: Path) -> None:
    folder = StudyFolder(defended_study)
    before = {p: p.stat().st_mtime_ns for p in folder.defended_results()}
    config = parse_config(with_cohort(TINY, defended_study.parent / "cohort"))
    paths = run_defended_study(config, defended_study, folds=[0], progress=False)
    assert sorted(paths) == sorted(before)
    assert {p: p.stat().st_mtime_ns for p in paths} == before


def test_a_result_of_another_format_is_refused_by_name_and_measured_again(
    defended_study: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from napari_invert.defences.frontier import collect_points
    from napari_invert.defences.result import RESULT_FORMAT_VERSION
    from napari_invert.errors import DataError

    study = tmp_path / "study"
    shutil.copytree(defended_study, study)
    folder = StudyFolder(study)
    path = folder.defended_result("skull_stripped", 0, "unet", "expose_less-1")
    doc = read_json(path)
    assert doc["format_version"] == RESULT_FORMAT_VERSION == 1
    networks = {p: p.stat().st_mtime_ns for p in path.parent.rglob("*.safetensors")}
    assert len(networks) >= 2  # the defended victim and the attacker's decoder

    path.write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(DataError, match="format version 99") as err:
        collect_points([study])
    assert err.value.path == path
    partial = {k: v for k, v in doc.items() if k != "utility"}
    path.write_text(json.dumps(partial))
    with pytest.raises(DataError, match="no utility"):
        collect_points([study])
    # a file from before the version key counts as version 1
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "format_version"}))
    assert len(collect_points([study])) == 4

    # rerunning measures the refused experiment again, from the networks it already trained
    path.write_text(json.dumps({**doc, "format_version": 99}))
    others = {p: p.stat().st_mtime_ns for p in folder.defended_results() if p != path}
    config = parse_config(with_cohort(TINY, defended_study.parent / "cohort"))
    run_defended_study(config, study, folds=[0], progress=False)
    again = read_json(path)
    assert again["format_version"] == 1 and again["utility"]["dice"] == doc["utility"]["dice"]
    assert {p: p.stat().st_mtime_ns for p in path.parent.rglob("*.safetensors")} == networks
    assert {p: p.stat().st_mtime_ns for p in others} == others


def test_frontier_cli_writes_table_figure_and_verdict(defended_study: Path, tmp_path: Path, capsys) -> None:
    from napari_invert.cli import main

    out = tmp_path / "frontier"
    assert main(["frontier", str(defended_study), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "U-Net (skull_stripped" in printed
    with open(out / "frontier.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["defence"] == "undefended"
    assert len(rows) == 4
    for r in rows:
        assert r["folds"] == "0"
        assert "[" in r["Dice (unseen) [95% CI]"]  # every point has an interval
        assert "[" in r["training-data leakage: MIA AUC [95% CI]"]
        assert r["chance top-1"] == f"{1 / 8:.3f}"
        assert "[" in r["feature inversion: member - non-member gain [95% CI]"]
        trivial = r["majority-label map Dice (same subjects)"]
        assert 0.0 <= float(trivial.split()[0]) <= 1.0  # the same map for every point of the group
        assert trivial.split()[0] == rows[0]["majority-label map Dice (same subjects)"].split()[0]
    doc = read_json(out / "frontier.json")
    assert len(doc["points"]) == 4 and doc["verdict"]
    md = (out / "frontier.md").read_text()
    assert "**Verdict.**" in md and "| undefended |" in md
    assert (out / "frontier_study_skull_stripped_unet.png").stat().st_size > 10_000
    assert "<h2" in (out / "frontier.html").read_text()


def test_frontier_labels_do_not_overlap_where_points_crowd(tmp_path: Path) -> None:
    """Six labels on nearly the same spot (the undefended corner) and one apart: no two drawn
    text boxes overlap, and the lone point keeps its label beside it, without a leader line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from napari_invert.report.frontier import place_labels

    fig = Figure(figsize=(4, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    crowd = [(f"{s:g}", 1.0, 0.70 - 0.002 * i) for i, s in enumerate([0.5, 1, 2, 4, 8, 16])]
    alone = ("3", 0.3, 0.2)
    for _, x, y in [*crowd, alone]:
        ax.plot([x], [y], "o")
    ax.set_xlim(0.0, 1.2)
    ax.set_ylim(0.0, 0.8)
    place_labels(ax, [*crowd, alone])
    fig.canvas.draw()
    texts = {t.get_text(): t for t in ax.texts}
    assert set(texts) == {"0.5", "1", "2", "4", "8", "16", "3"}
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    boxes = {}
    for k, t in texts.items():  # the text alone, not its leader line
        t.update_positions(renderer)
        boxes[k] = Text.get_window_extent(t, renderer)
    for a in boxes:
        for b in boxes:
            assert a == b or not boxes[a].overlaps(boxes[b]), (a, b)
    assert texts["3"].arrow_patch is None and texts["3"].get_position() == (4.0, 4.0)
    assert any(t.arrow_patch is not None for k, t in texts.items() if k != "3")  # the crowd spreads out


# -- the verdict on hand-made points ------------------------------------------------------------------
def _pt(kind: str, dice: float, cost: float, hits: int, n: int = 10, m: int = 40) -> FrontierPoint:
    from napari_invert.defences.frontier import binomial_p, clopper_pearson

    e = Estimate(dice, dice - 0.01, dice + 0.01, n)
    return FrontierPoint(
        study="s", variant="v", arch="unet", defence=kind, kind=kind.split("-")[0], strength=1.0,
        label=kind, threat_model="feature inversion", folds=[0], dice=e,
        dice_cost=Estimate(cost, cost - 0.01, cost + 0.01, n), reid_top1=clopper_pearson(hits, n),
        reid_hits=hits, chance_top1=1 / m, p_value_top1=binomial_p(hits, n, 1 / m),
        ssim_gain=e, member_gap=Estimate(float("nan"), float("nan"), float("nan"), 0), mia_auc=e,
        mia_attack="dice-threshold",
    )  # fmt: skip


def test_verdict_says_which_defence_reaches_chance_within_the_dice_budget() -> None:
    ref = _pt("none", 0.70, 0.0, hits=10)
    cheap = _pt("noise-1", 0.69, 0.01, hits=1)  # 1/10 hits at chance 1/40: p = 0.22
    costly = _pt("expose_less-3", 0.60, 0.10, hits=0)
    leaky = _pt("quantise-4", 0.70, 0.0, hits=6)
    [line] = verdict([ref, cheap, costly, leaky])
    assert line.startswith("U-Net (v, s): YES") and "noise-1" in line
    assert "expose_less-3" not in line and "quantise-4" not in line
    [line] = verdict([ref, costly, leaky])
    assert "NO" in line and "cheapest defence that reaches chance is expose_less-3" in line
    [line] = verdict([_pt("none", 0.7, 0.0, hits=1), cheap])
    assert "nothing to fix" in line
    [line] = verdict([_pt("none", 0.05, 0.0, hits=10), _pt("noise-1", 0.05, 0.0, hits=0)])
    assert "barely segments" in line


def test_verdict_says_when_a_point_segments_worse_than_the_majority_label_map() -> None:
    trivial = Estimate(0.62, 0.61, 0.63, 10)
    ref = _pt("none", 0.70, 0.0, hits=10)
    costly = _pt("expose_less-3", 0.52, 0.18, hits=1)
    for p in (ref, costly):
        p.trivial_dice = trivial
    assert costly.below_trivial and not ref.below_trivial
    [line] = verdict([ref, costly])
    assert "cheapest defence that reaches chance is expose_less-3" in line
    assert "Its Dice, 0.520, is below the 0.620 of a segmenter that ignores the image" in line
    # the reference itself below the map: Dice costs say little
    weak = _pt("none", 0.60, 0.0, hits=10)
    weak.trivial_dice = trivial
    [line] = verdict([weak, costly])
    assert "segments no better than a map that ignores the image (Dice 0.600 vs 0.620" in line
    # no label maps: nothing claimed
    assert not _pt("noise-1", 0.1, 0.6, hits=0).below_trivial


def test_frontier_points_carry_the_majority_label_map_dice_on_the_same_subjects(defended_study: Path) -> None:
    """Known answer: the majority label of the fold's members at each voxel, scored on its held-out
    subjects, computed here from the study's label files."""
    import nibabel as nib
    import numpy as np

    from napari_invert.defences.frontier import collect_points
    from napari_invert.metrics.dice import majority_label_map, mean_dice

    folder = StudyFolder(defended_study)
    fold = folder.read_splits()["folds"][0]
    n = folder.read_cohort()["n_classes"]

    def labels(sid: str) -> np.ndarray:
        return np.asarray(nib.load(folder.labels("skull_stripped", sid)).dataobj, dtype=np.int64)

    atlas = majority_label_map([labels(s) for s in fold["private"]], n)
    expected = np.mean([mean_dice(atlas, labels(s), n) for s in fold["holdout"]])
    points = collect_points([defended_study])
    assert len(points) == 4
    for p in points:
        assert p.trivial_dice.value == pytest.approx(expected, abs=1e-12)
        assert p.trivial_dice.n == len(fold["holdout"])
        assert p.below_trivial == (p.dice.value < expected)


# -- the frontier's intervals come from napari_invert.identify (known answers) -----------------------
def test_frontier_intervals_known_answers() -> None:
    from napari_invert.defences.frontier import bootstrap_mean, fold_auc, group_gap, paired_cost

    nan = float("nan")
    # every subject loses exactly 0.1 Dice: cost 0.1 with a zero-width interval; NaN pairs dropped
    cost = paired_cost([0.8, 0.7, 0.9, nan], [0.7, 0.6, 0.8, 0.5])
    assert (cost.value, cost.lo, cost.hi, cost.n) == pytest.approx((0.1, 0.1, 0.1, 3))
    assert paired_cost([nan], [0.5]).n == 0
    # member gains all 1, non-member gains all 0: gap 1 exactly
    gap = group_gap([1.0, 1.0, 1.0], [0.0, 0.0, nan])
    assert (gap.value, gap.lo, gap.hi, gap.n) == (1.0, 1.0, 1.0, 5)
    # one fold perfectly separated (AUC 1), one perfectly reversed (AUC 0): mean 0.5 in every resample
    auc = fold_auc([([0.9, 0.8], [0.1, 0.2, nan]), ([0.1, 0.2], [0.8, 0.9])])
    assert (auc.value, auc.lo, auc.hi, auc.n) == (0.5, 0.5, 0.5, 8)
    assert fold_auc([([], [0.1])]).n == 0
    mean = bootstrap_mean([0.2, nan, 0.4])
    assert mean.value == pytest.approx(0.3) and 0.2 <= mean.lo < 0.3 < mean.hi <= 0.4 and mean.n == 2


def test_defended_folds_run_as_executor_units_in_parallel_and_resume(tmp_path: Path) -> None:
    """`defend --jobs 2`: one executor unit per fold on the local pool; the results are the
    ones a sequential run finds finished (it trains nothing again)."""
    from napari_invert.study.defended import run_defended_parallel

    data = with_cohort(
        {**TINY, "defences": [{"kind": "noise", "strengths": [1.0], "train": False}]},
        demo_cohort_for(TINY, tmp_path / "cohort"),
    )
    config = parse_config(data)
    study = tmp_path / "study"
    paths = run_defended_parallel(config, study, 2, folds=[1, 2], progress=False)
    folder = StudyFolder(study)
    expected = {
        folder.defended_result("skull_stripped", k, "unet", slug)
        for k in (1, 2)
        for slug in ("none", "noise-1")
    }
    assert set(paths) == expected
    for k in (1, 2):
        assert read_json(folder.defended_result("skull_stripped", k, "unet", "noise-1"))["fold"] == k
    before = {p: p.stat().st_mtime_ns for p in paths}
    again = run_defended_study(config, study, folds=[1, 2], progress=False)
    assert {p: p.stat().st_mtime_ns for p in again} == before
