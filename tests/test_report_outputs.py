"""Report outputs: the files evaluate_study writes, report.html, the evaluation/ layout,
robustness (known answers, real computation; see ``report_helpers``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from report_helpers import N_SUBJECTS, SIM_METRICS, temp_leftovers, tiny_study

from napari_invert.errors import ConfigError, DataError
from napari_invert.report import evaluate_study


# -- files -----------------------------------------------------------------------------------
def test_every_output_file_exists(report_study: tuple[Path, object]) -> None:
    root, _ = report_study
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
    assert temp_leftovers(ev) == []


def test_report_html_is_self_contained(report_study: tuple[Path, object]) -> None:
    root, summary = report_study
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


# -- robustness ----------------------------------------------------------------------------------
def test_rerun_and_crash_leave_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tiny_study(
        tmp_path,
        {("unet", "bottleneck"): (0.8, 0.05)},
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
    assert temp_leftovers(ev) == []
    assert (ev / "report.html").read_bytes() == report  # untouched
    monkeypatch.undo()
    evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    assert (ev / "metrics.csv").read_bytes() == first
    assert "<img" not in (ev / "report.html").read_text(encoding="utf-8")
    assert temp_leftovers(ev) == []


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a study folder"):
        evaluate_study(tmp_path, progress=False)
    root = tiny_study(
        tmp_path,
        {("unet", "bottleneck"): (0.5, 0.05)},
        n_subjects=4,
    )
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate_study(root, metrics=["psnr"], progress=False)
    with pytest.raises(ConfigError, match="deformation"):
        evaluate_study(root, deformation="some", progress=False)


# -- issue 13 item 12: evaluation/ grouped, paths from StudyFolder, old layout still readable ---------
def test_evaluation_folder_is_grouped(report_study: tuple[Path, object]) -> None:
    from napari_invert.study.layout import StudyFolder

    root, summary = report_study
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

    root = tiny_study(
        tmp_path,
        {("unet", "bottleneck+skips"): (0.5, 0.02), ("unet", "bottleneck"): (0.5, 0.02)},
        n_subjects=4,
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
def test_report_has_table_of_contents_linking_every_section(report_study: tuple[Path, object]) -> None:
    root, _ = report_study
    text = (root / "evaluation" / "report.html").read_text(encoding="utf-8")
    toc = re.search(r'<nav class="toc">(.*?)</nav>', text, re.S)
    assert toc is not None
    links = re.findall(r'href="#([^"]+)"', toc.group(1))
    ids = re.findall(r'<section id="([^"]+)">', text)
    assert links == ids and len(ids) >= 8
    for needed in ("verdict", "tables", "identification", "similarity", "ranks", "splits", "config"):
        assert needed in ids
    assert text.index('<nav class="toc">') < text.index('<section id="verdict">')


def test_a_section_is_a_builder(report_study: tuple[Path, object]) -> None:
    """A new section = a function returning a Section, added to the builders' list."""
    from napari_invert.report.html import SECTION_BUILDERS, Section, build_report
    from napari_invert.study.results import StudyResults

    root, summary = report_study

    def extra_section(ctx):  # what a new report/<concern>.py provides
        return Section("extra", "An extra section", f"<p>{len(ctx.summary.experiments)} experiments</p>")

    text = build_report(StudyResults(root), summary, [], [], [*SECTION_BUILDERS, extra_section])
    assert '<a href="#extra">An extra section</a>' in text
    assert '<section id="extra"><h2>An extra section</h2>' in text and "<p>3 experiments</p>" in text
