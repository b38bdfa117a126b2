"""``napari-invert evaluate --backend ray``: the evaluation's similarity-matrix row blocks and
registration blocks run as Ray tasks on a local Ray instance (2 CPUs, no cluster) and give
the same files and numbers as the same units on the local backend, and the same similarity
scores as the default in-process evaluation up to float32 rounding (every rank identical).
(Registrations on every backend against the worker pool: tests/test_execution_units.py.)

The study is a synthetic study folder written into tmp_path (4 subjects on a 16^3 grid, one
experiment), evaluated with sampled deformation (true original + 2 others per row)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from report_helpers import tiny_study

from napari_invert.cli import main
from napari_invert.config import load_config
from napari_invert.execution import make_executor
from napari_invert.report import evaluate_study
from napari_invert.report.evaluate import _executor
from napari_invert.study.layout import StudyFolder

#: files whose content depends on the run (timings, absolute paths), not on the numbers
RUN_FILES = ("report.html", "summary.json")


def _results(root: Path) -> dict[str, Path]:
    """The evaluation's result files (no figures, caches or block work files)."""
    ev = root / "evaluation"
    return {
        str(p.relative_to(ev)): p
        for p in ev.rglob("*")
        if p.is_file()
        and p.name not in RUN_FILES
        and not {"figures", "cache", "blocks"} & set(p.relative_to(ev).parts)
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_evaluation_on_ray_equals_the_local_backend(ray_local, tmp_path, monkeypatch):
    source = tiny_study(tmp_path / "src", {("unet", "bottleneck"): (0.8, 0.05)}, n_subjects=4)
    roots = {name: tmp_path / name for name in ("ray", "units", "default")}
    for root in roots.values():
        shutil.copytree(source, root)
    common = {"progress": False, "figures": False}
    evaluate_study(roots["default"], deformation="off", **common)  # in this process, not as units
    evaluate_study(roots["units"], deformation="sample", executor=make_executor("local"), **common)
    # Ray through the command line, the study folder given relative to the working directory
    # (the workers run elsewhere: every path they get must be absolute).
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "ray", "--backend", "ray", "--deformation", "sample", "--no-progress"]) == 0

    ray_files, unit_files, default_files = (_results(roots[n]) for n in ("ray", "units", "default"))
    assert ray_files.keys() == unit_files.keys()
    assert "similarity/skull_stripped_unet_bottleneck_deformation.npy" in ray_files
    maps = [k for k in ray_files if k.startswith("deformation/") and k.endswith(".nii.gz")]
    assert len(maps) == 4  # |u| of every true pair
    for key, path in ray_files.items():
        if key.endswith(".nii.gz"):  # registrations: bit-identical
            np.testing.assert_array_equal(
                np.asarray(nib.load(path).dataobj), np.asarray(nib.load(unit_files[key]).dataobj), key
            )
        else:  # the same units on Ray and on the local backend: the same bytes
            assert path.read_bytes() == unit_files[key].read_bytes(), key
    similarity = [k for k in default_files if k.startswith("similarity/") and k.endswith(".npy")]
    assert len(similarity) == 6  # 3 metrics: the reconstructions' and the priors' matrices
    for key in similarity:  # the in-process evaluation: float32 rounding of the scores
        ray_scores, default_scores = np.load(ray_files[key]), np.load(default_files[key])
        np.testing.assert_allclose(ray_scores, default_scores, atol=1e-6, err_msg=key)
    ray_rows = _rows(ray_files["metrics.csv"])
    assert {r["metric"] for r in ray_rows} == {"correlation", "ssim", "ssim_global", "deformation"}
    similar = [r["rank"] for r in ray_rows if r["metric"] != "deformation"]
    assert similar == [r["rank"] for r in _rows(default_files["metrics.csv"])]
    # a mildly blurred, noisy reconstruction is re-identified by correlation (rank 1 of 4)
    assert all(r["rank"] == "1" for r in ray_rows if r["metric"] == "correlation")

    # the blocks' copies of the volumes are removed, their results kept for a rerun
    blocks = StudyFolder(roots["ray"]).evaluation.similarity_blocks_dir
    assert not (blocks / "inputs").exists() and len(list(blocks.glob("*.npy"))) == 6  # 3 metrics x 2


def test_the_backend_defaults_to_the_study_configs_execution_block(tmp_path):
    root = tiny_study(tmp_path, {("unet", "bottleneck"): (0.8, 0.05)}, n_subjects=4)
    config = load_config(StudyFolder(root).config_path)
    on_ray = config.model_copy(update={"execution": config.execution.model_copy(update={"backend": "ray"})})
    assert _executor(config, None, None) is None  # local: the in-process evaluation
    assert _executor(on_ray, "local", None) is None  # --backend local wins over the config
    for chosen in (_executor(on_ray, None, "auto"), _executor(config, "ray", None)):
        assert chosen.name == "ray"
    assert _executor(on_ray, None, "auto").address == "auto"
    assert _executor(on_ray, None, None).address is None  # a local Ray instance
