"""The benchmark machinery (``napari-invert bench``) on tiny inputs.

Timings are never asserted (the machine is shared); only the document's schema, that
ratios are positive finite numbers, and that our metrics agree with the references.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from napari_invert.bench import SCHEMA_VERSION, plan_for, run_benchmarks
from napari_invert.bench.cases.registration import project_deformation
from napari_invert.bench.cases.studies import NOT_MEASURED, end_to_end, read_study
from napari_invert.bench.markdown import format_seconds, render_markdown
from napari_invert.bench.timing import Stats, extrapolate, median_of_steps, speedup, thread_limit


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _stats_ok(stats: dict[str, Any]) -> None:
    for key in ("median_s", "min_s", "max_s", "runs_s", "repeats", "warmup", "extrapolated"):
        assert key in stats, key
    assert _positive(stats["median_s"])
    assert stats["repeats"] == len(stats["runs_s"]) >= 1
    assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]


def _fake_study(root: Path, name: str, last: float) -> Path:
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"name: {name}\n", encoding="utf-8")
    manifest = {
        "steps": {
            "data:skull_stripped": {"finished": "2026-01-01T00:00:00+00:00", "subjects": 4},
            "segmenter:skull_stripped:fold0:unet": {
                "finished": "2026-01-01T01:00:00+00:00",
                "seconds": 12.5,
                "final_loss": 0.3,
            },
            "attack:skull_stripped:fold0:unet:bottleneck": {
                "finished": "2026-01-01T01:00:20+00:00",
                "seconds": 7.5,
            },
        },
        "last_run_seconds": last,
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (root / "evaluation").mkdir()
    (root / "evaluation" / "summary.json").write_text(json.dumps({"seconds": 3.25}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("bench")
    study = _fake_study(base / "demo_study", "demo", 42.0)
    out = base / "out"
    # one torch thread: tiny operations are dominated by OpenMP hand-offs, which a shared,
    # busy machine turns into seconds (the timings are not asserted anyway)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        doc = run_benchmarks(
            quick=True, device="cpu", out_dir=out, studies=[study], tiny=True, progress=False
        )
    finally:
        torch.set_num_threads(threads)
    return doc, out


def test_files_and_schema(tiny_run: tuple[dict[str, Any], Path]) -> None:
    doc, out = tiny_run
    on_disk = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert on_disk["schema_version"] == SCHEMA_VERSION == doc["schema_version"]
    assert on_disk["mode"] == "tiny" and on_disk["device"] == "cpu" and on_disk["complete"] is True
    for key in ("created", "machine", "plan", "cases", "notes", "load_average_start", "seconds"):
        assert key in on_disk, key
    machine = on_disk["machine"]
    for key in ("cpu_model", "usable_cores", "logical_cpus", "torch_threads", "ram_bytes", "gpu", "versions"):
        assert key in machine, key
    assert machine["gpu"] is None  # device cpu
    for pkg in ("python", "torch", "monai", "skimage", "antspyx", "numpy"):
        assert machine["versions"][pkg], pkg
    assert set(on_disk["cases"]) >= {"ssim", "correlation", "grids", "training", "registration", "end_to_end"}
    md = (out / "results.md").read_text(encoding="utf-8")
    for heading in (
        "## Machine",
        "## Windowed SSIM",
        "## Pearson correlation",
        "## Training steps",
        "## Registration",
        "## End to end",
    ):
        assert heading in md, heading
    assert "| --- |" not in md and "|---|" in md


def test_ssim_ratios_and_agreement(tiny_run: tuple[dict[str, Any], Path]) -> None:
    (case,) = tiny_run[0]["cases"]["ssim"]
    assert "error" not in case
    pair = case["pair"]
    for impl in ("skimage", "monai", "ours_windowed", "ours_matrix_1x1"):
        _stats_ok(pair[impl])
    for key in (
        "speedup_windowed_vs_skimage",
        "speedup_windowed_vs_monai",
        "speedup_matrix_1x1_vs_skimage",
        "speedup_matrix_1x1_vs_monai",
    ):
        assert _positive(pair[key]), key
    (mx,) = case["matrices"]
    assert (mx["n"], mx["m"], mx["pairs"]) == (2, 3, 6)
    _stats_ok(mx["ours"])
    assert mx["ours"]["extrapolated"] is False
    for ref in ("skimage_loop", "monai_loop"):
        _stats_ok(mx[ref])
        assert mx[ref]["extrapolated"] is True and mx[ref]["from_pairs"] >= 1
    assert _positive(mx["speedup_vs_skimage"]) and _positive(mx["speedup_vs_monai"])
    agree = case["agreement"]
    assert agree["ours_windowed_vs_skimage"] < 1e-6
    assert agree["ours_matrix_vs_skimage"] < 1e-5
    assert agree["ours_matrix_1x1_vs_skimage"] < 1e-5
    assert agree["monai_vs_skimage"] < 1e-3  # MONAI: float32, uncentred variances


def test_correlation_ratios_and_agreement(tiny_run: tuple[dict[str, Any], Path]) -> None:
    (case,) = tiny_run[0]["cases"]["correlation"]
    assert "error" not in case and case["masked"] is True
    _stats_ok(case["pair"]["numpy"])
    _stats_ok(case["pair"]["ours_pair"])
    assert _positive(case["pair"]["speedup_pair_vs_numpy"])
    (mx,) = case["matrices"]
    _stats_ok(mx["ours"])
    assert mx["numpy_loop"]["extrapolated"] is True
    assert _positive(mx["speedup_vs_numpy"])
    assert case["agreement"]["ours_pair_vs_numpy"] < 1e-9
    assert case["agreement"]["ours_matrix_vs_numpy"] < 1e-9


def test_training_entries(tiny_run: tuple[dict[str, Any], Path]) -> None:
    entries = tiny_run[0]["cases"]["training"]
    kinds = {(e["kind"], e["arch"], e["tap"]) for e in entries}
    assert kinds == {
        ("segmenter", "unet", None),
        ("decoder", "unet", "bottleneck+skips"),
        ("segmenter", "segnet", None),
        ("decoder", "segnet", "bottleneck+indices"),
    }
    for e in entries:
        assert "error" not in e, e.get("error")
        _stats_ok(e["seconds_per_step"])
        mem = e["memory"]
        assert mem["method"] in ("vmhwm", "rss_sampling", "cuda_max_memory_allocated")
        assert mem["peak_increment_bytes"] is None or mem["peak_increment_bytes"] >= 0
        assert e["n_parameters"] > 0 and e["shape"] == [16, 16, 16]


def test_registration_and_projection(tiny_run: tuple[dict[str, Any], Path]) -> None:
    reg = tiny_run[0]["cases"]["registration"]
    assert "error" not in reg, reg.get("error")
    _stats_ok(reg["presets"]["fast"]["seconds_per_pair"])
    assert all(math.isfinite(v) and v >= 0 for v in reg["presets"]["fast"]["mean_norm_mm"])
    proj = reg["projection"]["projected"]["fast"]
    assert _positive(proj["full"]["per_study_s"]) and _positive(proj["sample"]["per_experiment_s"])


def test_end_to_end_read_from_study(tiny_run: tuple[dict[str, Any], Path]) -> None:
    rows = {r["config"]: r for r in tiny_run[0]["cases"]["end_to_end"]}
    demo = rows["demo"]
    assert demo["measured"] is True
    assert demo["last_run_seconds"] == 42.0
    assert demo["steps_total_s"] == 20.0
    assert demo["by_kind"] == {"segmenter": 12.5, "attack": 7.5}
    assert demo["evaluation_seconds"] == 3.25
    # the data step finished an hour before the 42 s last run began: an earlier run did it
    assert demo["steps_before_last_run"] == ["data:skull_stripped"]
    assert rows["quick_cpu"]["measured"] is False
    assert rows["quick_cpu"]["status"] == NOT_MEASURED


def test_study_without_manifest(tmp_path: Path) -> None:
    assert "error" in read_study(tmp_path)
    rows = end_to_end([tmp_path])
    assert [r["measured"] for r in rows] == [False, False, False]
    assert "not measured in this run" in render_markdown({"cases": {"end_to_end": rows}})


def test_projection_counts() -> None:
    from napari_invert.config import parse_config

    config = parse_config(
        {
            "name": "p",
            "cohort": {"kind": "demo"},
            "evaluation": {"deformation": {"mode": "sample", "sample_size": 4, "workers": 2, "taps": "all"}},
        }
    )  # default taps: 2 per architecture, 2 architectures, 1 variant -> 4 experiments
    proj = project_deformation({"fast": 2.0}, config, n_subjects=40)
    assert proj["experiments"] == 4 and proj["workers"] == 2 and proj["sample_size"] == 4
    assert proj["pairs_per_experiment"] == {"full": 40 * 40 + 40, "sample": 40 * 5 + 40}
    assert proj["pairs_per_study"] == {"full": 4 * 1600 + 40, "sample": 4 * 200 + 40}
    assert proj["projected"]["fast"]["full"]["per_study_s"] == pytest.approx(6440 * 2.0 / 2)
    first = config.model_copy(deep=True)
    first.evaluation.deformation.taps = "first"  # one registered experiment per architecture
    assert project_deformation({"fast": 2.0}, first, 40)["pairs_per_study"]["sample"] == 2 * 200 + 40


def test_timing_helpers() -> None:
    per_pair = Stats([0.5, 0.7, 0.6])
    ext = extrapolate(per_pair, 400)
    assert ext.extrapolated and ext.median_s == pytest.approx(240.0) and ext.from_pairs == 3
    assert speedup(ext, Stats([2.0])) == pytest.approx(120.0)
    assert speedup(Stats([1.0]), Stats([0.0])) is None
    steps = median_of_steps([1.0, 1.5, 2.0, 2.5], warmup=1)
    assert steps.runs_s == pytest.approx([0.5, 0.5, 0.5]) and steps.warmup == 1
    assert format_seconds(0.0123) == "12.3 ms" and format_seconds(None) == "n/a"


def test_thread_limit_restores() -> None:
    before = torch.get_num_threads()
    with thread_limit(1) as info:
        assert torch.get_num_threads() == 1 and info["torch_threads"] == 1
    assert torch.get_num_threads() == before
    with thread_limit(None) as info:
        assert info["torch_threads"] == before and info["blas_limited"] is False


def test_plans() -> None:
    quick, full = plan_for(True), plan_for(False)
    assert [c.shape for c in quick.similarity] == [(96, 96, 96)]
    assert quick.similarity[0].matrices == ((10, 40),)
    assert {c.shape for c in full.similarity} == {(96, 96, 96), (160, 192, 160)}
    assert full.repeats > quick.repeats and quick.isolate and full.isolate


def test_cpu_speed_variants(tiny_run: tuple[dict[str, Any], Path]) -> None:
    from napari_invert.bench.cases.cpu_speed import VARIANTS

    doc, out = tiny_run
    entries = doc["cases"]["cpu_speed"]
    assert {(e["grid"], e["arch"]) for e in entries} == {("tiny", "unet"), ("tiny", "segnet")}
    for e in entries:
        assert "error" not in e, e.get("error")
        # tiny mode: every variant but torch.compile (minutes to compile on a busy machine)
        assert set(e["variants"]) == {v for v in VARIANTS if "compile" not in v}
        for name, v in e["variants"].items():
            assert "error" not in v, (name, v.get("error"))
            assert _positive(v["seconds_per_step"]) and _positive(v["ratio"])
        assert e["variants"]["contiguous"]["ratio"] == pytest.approx(1.0)
        # bf16 autocast changes the logits a little, not wholesale
        assert 0 < e["variants"]["channels_last_3d+bf16"]["bf16_logits_relative_error"] < 0.1
    assert "## CPU training step" in (out / "results.md").read_text(encoding="utf-8")


def test_cpu_speed_variants_train_the_same_network() -> None:
    """Every fp32 variant computes the same first loss: a memory format, fused Adam or the
    oneDNN switch changes speed, not the result (bf16 only approximately)."""
    from napari_invert.bench.cases.cpu_speed import _variant_step

    seg = {"base_filters": 4, "levels": 2, "convs_per_level": 1}
    losses = {
        v: _variant_step(v, "unet", seg, 3, [16, 16, 16], 2, seed=5)[0]()
        for v in (
            "contiguous",
            "channels_last_3d",
            "channels_last_3d+fused_adam",
            "channels_last_3d,no_onednn",
        )
    }
    ref = losses["contiguous"]
    assert all(v == pytest.approx(ref, rel=1e-5) for v in losses.values()), losses
    bf16 = _variant_step("channels_last_3d+bf16", "unet", seg, 3, [16, 16, 16], 2, seed=5)[0]()
    assert bf16 == pytest.approx(ref, rel=0.05)


def test_registration_agreement_known_answers() -> None:
    """The FireANTs-versus-ANTs figures on matrices whose agreement is known."""
    import numpy as np

    from napari_invert.bench.registration_agreement import agreement

    ants = np.array([[1.0, 3.0, 2.0, 4.0], [2.5, 1.0, 3.0, 2.0], [3.0, 2.0, 0.5, 1.0]])
    same = agreement(ants, 2.0 * ants + 1.0)  # a monotone rescaling ranks every row alike
    assert same["pearson_mean_displacement"] == pytest.approx(1.0)
    assert same["spearman_per_row_mean"] == pytest.approx(1.0)
    assert same["true_rank_ants"] == [1, 1, 1] and same["top1_fireants"] == 1.0
    assert same["true_rank_spearman"] is None  # every row ranked first: Spearman undefined
    reversed_rows = agreement(ants, -ants, ("ants", "ants_reseeded"))
    assert reversed_rows["spearman_per_row_min"] == pytest.approx(-1.0)
    # the truth (column i of row i) ranks last among 4 in every reversed row
    assert (
        reversed_rows["true_rank_ants_reseeded"] == [4, 4, 4] and reversed_rows["top1_ants_reseeded"] == 0.0
    )


def test_registration_agreement_on_a_study_s_reconstructions(study_dir: Path, tmp_path: Path) -> None:
    """``--study``: the attack's reconstructions as rows, their own originals first among the candidates."""
    import numpy as np

    from napari_invert.bench.registration_agreement import main, study_block
    from napari_invert.study.results import Experiment, StudyResults

    block = study_block(study_dir, "unet/bottleneck+skips", rows=2, candidates=3)
    assert block["row_ids"] == ["S01", "S02"] and block["candidate_ids"] == ["S01", "S02", "S03"]
    study = StudyResults(study_dir)
    recon = study.recon(Experiment("skull_stripped", "unet", "bottleneck+skips"), "S02")
    np.testing.assert_array_equal(block["moving"][1], recon)
    np.testing.assert_array_equal(block["images"][2], study.original("skull_stripped", "S03"))
    with pytest.raises(ValueError, match="unet/bottleneck\\+skips"):  # names what the study has
        study_block(study_dir, "unet/encoder", 2, 3)
    with pytest.raises(ValueError, match="3 subjects"):
        study_block(study_dir, None, 2, 5)
    out = tmp_path / "agreement"
    assert main(["--out", str(out), "--study", str(study_dir), "--rows", "2", "--candidates", "3",
                 "--backend", "ants"]) == 0  # fmt: skip
    doc = json.loads((out / "agreement.json").read_text())
    assert doc["row_ids"] == ["S01", "S02"] and doc["spacing_mm"] == [2.0, 2.0, 2.0]
    ants = np.asarray(doc["matrices"]["ants"])
    assert ants.shape == (2, 3) and np.isfinite(ants).all() and (ants >= 0).all()

    # the second control: ANTs with the paper's SyN step and CC radius, cached apart, compared with ANTs
    from napari_invert.bench.registration_agreement import VARIANT_PRESET

    assert main(["--out", str(out), "--study", str(study_dir), "--rows", "2", "--candidates", "3",
                 "--backend", "ants", "ants_variant"]) == 0  # fmt: skip
    doc = json.loads((out / "agreement.json").read_text())
    np.testing.assert_array_equal(np.asarray(doc["matrices"]["ants"]), ants)  # from the cache
    variant = np.asarray(doc["matrices"]["ants_variant"])
    assert variant.shape == (2, 3) and np.isfinite(variant).all() and not np.array_equal(variant, ants)
    assert doc["control_ants_variant"]["pairs"] == 6 and "agreement" not in doc  # no FireANTs run
    presets = [json.loads(f.read_text())["preset"] for f in (out / "cache").glob("*.json")]
    assert sum(p == VARIANT_PRESET.as_dict() for p in presets) == 6
    assert VARIANT_PRESET.grad_step == 0.1 and VARIANT_PRESET.syn_radius == 4
    assert set(doc["seconds_per_pair_median"]) == {"ants", "ants_variant"}
    # the same comparisons for the whole transform's displacement, read from the same cache
    total = doc["total"]
    assert total["control_ants_variant"]["pairs"] == 6 and "agreement" not in total
    records = [json.loads(f.read_text()) for f in (out / "cache").glob("*.json")]
    fast_ants = sorted(r["total_mean_norm"] for r in records if r["preset"]["name"] == "fast")
    assert sorted(np.ravel(total["matrices"]["ants"]).tolist()) == pytest.approx(fast_ants)
