"""The ``napari-invert`` command line as a user runs it (a real subprocess)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from napari_invert import __version__


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_invert", *args], capture_output=True, text=True, timeout=300
    )


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"napari-invert {__version__}"
    out = run_cli("--help").stdout
    for command in ("data", "demo", "study", "evaluate", "bench", "view"):
        assert command in out


def test_data_info_lpba40_headers(lpba40):
    result = run_cli("data", "info", str(lpba40), "--headers-only")
    assert result.returncode == 0, result.stderr
    assert "subjects            40" in result.stdout
    assert "160x192x160 (40)" in result.stdout
    assert "1x1x1 (40)" in result.stdout
    assert "labelled structures 56" in result.stdout


def test_data_info_ixi_headers(ixi):
    result = run_cli("data", "info", str(ixi), "--headers-only")
    assert result.returncode == 0, result.stderr
    assert "subjects            40" in result.stdout
    assert "2x2x2 (40)" in result.stdout
    assert "labelled structures 148" in result.stdout
    assert "full_head" in result.stdout


def test_truncated_file_gives_one_line_error_naming_it(tmp_path, lpba40):
    images = tmp_path / "cohort" / "images"
    images.mkdir(parents=True)
    shutil.copy(lpba40 / "images" / "S01.nii.gz", images / "S01.nii.gz")
    data = (lpba40 / "images" / "S02.nii.gz").read_bytes()
    (images / "S02.nii.gz").write_bytes(data[: len(data) // 3])
    result = run_cli("data", "info", str(tmp_path / "cohort"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1
    assert str(images / "S02.nii.gz") in errors[0] and "truncated" in errors[0]


def test_missing_folder_and_bad_config_are_one_line_errors(tmp_path):
    result = run_cli("data", "info", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert str(tmp_path / "nowhere") in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("cohort: {kind: demo}\nattack: {lr: 1}\n")
    result = run_cli("study", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "attack.lr: unknown key" in result.stderr and "Traceback" not in result.stderr


# -- issue 13 item 7: `study` honours `jobs:` of the config ---------------------------------------
def test_study_uses_jobs_from_config_unless_given(tmp_path):
    """quick_cpu.yaml says ``jobs: 2``: without ``--jobs`` the study runs two fold processes."""
    from pathlib import Path

    from napari_invert.cli import build_parser, study_jobs
    from napari_invert.config import load_config

    config_path = Path(__file__).resolve().parent.parent / "sample_configs" / "quick_cpu.yaml"
    config = load_config(config_path)
    assert config.jobs == 2
    parser = build_parser()
    args = parser.parse_args(["study", str(config_path), "--out", str(tmp_path / "s")])
    assert args.jobs is None  # argparse must not hide the config's value behind a default
    assert study_jobs(args, config) == 2
    args = parser.parse_args(["study", str(config_path), "--out", str(tmp_path / "s"), "--jobs", "1"])
    assert study_jobs(args, config) == 1
    args = parser.parse_args(["study", str(config_path), "--out", str(tmp_path / "s"), "--jobs", "3"])
    assert study_jobs(args, config) == 3
    # a selection of victims (--variants/--architectures) runs in the config's processes too
    args = parser.parse_args(
        ["study", str(config_path), "--out", str(tmp_path / "s"), "--variants", "skull_stripped"]
    )
    assert study_jobs(args, config) == 2


