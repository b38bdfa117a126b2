"""Interrupting a study that runs on Ray or on the local process pool: SIGINT to the driver
(only to it, as ``kill -INT``) cancels the units not started and stops the running ones, the
command exits promptly with a clear message naming them, nothing keeps writing into the
study folder afterwards, and a rerun finishes the study with the same files as a local run.

Made independent of timing by construction, not by sleeps: Ray gets ONE CPU, so the two
victim units run one after the other; the signal is sent once the first unit is recorded
as finished AND the second has written its first training checkpoint, i.e. while the
second is training (it has 300 steps to go, seconds to minutes). The local pool (2 processes,
3 victims) is interrupted once both running victims have written a training checkpoint."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from napari_invert.config import parse_config
from napari_invert.study.layout import StudyFolder
from napari_invert.study.runner import run_study_parallel

STEPS = 320
CONFIG = {
    "name": "interrupt",
    "cohort": {"kind": "demo", "n_subjects": 6, "seed": 3, "demo_voxel_mm": 8.0},
    "preprocess": {"voxel_mm": None, "variants": ["skull_stripped"]},
    "folds": 2,
    "holdout": 0,
    "controls": {"untrained_victim": False},
    "segmenter": {"architectures": ["unet"], "base_filters": 4, "levels": 2, "convs_per_level": 1},
    "segmenter_training": {"steps": STEPS, "batch_size": 2, "checkpoint_every": 10},
    "attack": {
        "taps": {"unet": ["bottleneck+skips"]},
        "decoder_base_filters": 4,
        "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "augment": False},
    },
    "device": "cpu",
    "num_threads": 1,
}

#: The driver: the ordinary command line; with ``--backend ray`` a local Ray instance with one
#: CPU first.
DRIVER = """
import os
import signal
import sys
# a terminal's Ctrl-C: a process started in the background of a non-interactive shell (CI runners,
# nohup) inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt
signal.signal(signal.SIGINT, signal.default_int_handler)
if sys.argv[sys.argv.index("--backend") + 1] == "ray":
    import ray
    os.environ.setdefault("RAY_worker_niceness", "0")  # as RayExecutor does for a local instance
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
from napari_invert.cli import main
sys.exit(main(sys.argv[1:]))
"""
RAY = ("--backend", "ray")


def _write_config(root: Path, **changes) -> Path:
    """``CONFIG`` (with ``changes``) on a demo cohort, as ``root/study.yaml``."""
    from napari_invert.data.demo import make_demo_cohort

    cohort = make_demo_cohort(root / "cohort", n_subjects=6, seed=3, voxel_mm=8.0, progress=False)
    data = {**copy.deepcopy(CONFIG), **changes}
    data["cohort"]["path"] = str(cohort)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    return _write_config(tmp_path_factory.mktemp("interrupt"))


def _driver(config_file: Path, out: Path, backend: tuple[str, ...] = RAY) -> subprocess.Popen:
    path = [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    args = ["study", str(config_file), "--out", str(out), *backend, "--no-progress"]
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, modification time in ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _finished_units(out: Path) -> list[int]:
    """Folds whose victim unit finished (its attack step is in the manifest)."""
    try:
        steps = StudyFolder(out).read_manifest().get("steps", {})
    except Exception:  # not written yet, or being replaced
        return []
    return sorted(f for f in (0, 1) if f"attack:skull_stripped:fold{f}:unet:bottleneck+skips" in steps)


def _training(out: Path, fold: int) -> bool:
    """Whether the victim of ``fold`` has written a training checkpoint."""
    stem = StudyFolder(out).segmenter_stem("skull_stripped", fold, "unet")
    return any(stem.parent.glob("segmenter_resume*.json"))


def _results(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(nib.load(p).dataobj) for p in root.rglob("recon/*.nii.gz")}


def _files(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "_resume" not in p.name and "cache" not in p.parts and "manifest" not in p.name
    }


def _interrupt(proc: subprocess.Popen) -> str:
    """SIGINT to the driver; its stderr once it exited (within 5 minutes)."""
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=300)
    print(f"driver exited {time.monotonic() - t0:.1f} s after SIGINT:", *err.splitlines()[-4:], sep="\n")
    return err


def _assert_stopped(out: Path, cut_short: list[int]) -> None:
    """Nothing keeps running: the folder does not change any more, no temporary file of an
    abandoned write is left (atomic writes: '.<name>.<random><suffix>'), and the victims of
    ``cut_short`` did not finish but kept their training checkpoint for the resume."""
    before = _state(out)
    time.sleep(5)
    assert _state(out) == before
    assert not [name for name in before if Path(name).name.startswith(".")]
    steps = StudyFolder(out).read_manifest()["steps"]
    for fold in cut_short:
        assert f"segmenter:skull_stripped:fold{fold}:unet" not in steps  # really cut short
        stem = StudyFolder(out).segmenter_stem("skull_stripped", fold, "unet")
        assert stem.with_name("segmenter_resume.safetensors").is_file()  # kept for the resume


def _assert_rerun_finishes(config_file: Path, out: Path, backend: tuple[str, ...], reference: Path) -> None:
    """The rerun (same command) finishes the study; it equals a study run locally."""
    rerun = _driver(config_file, out, backend)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err
    config = parse_config(yaml.safe_load(config_file.read_text()))
    local = run_study_parallel(config, reference, jobs=2, progress=False, backend="local")
    assert _files(out) == _files(local.root)
    assert set(StudyFolder(out).read_manifest()["steps"]) == set(local.read_manifest()["steps"])
    ours, theirs = _results(out), _results(local.root)
    assert ours and ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_sigint_cancels_the_ray_tasks_and_the_study_resumes(config_file, tmp_path):
    pytest.importorskip("ray", reason="the [cluster] extra (Ray) is not installed")
    out = tmp_path / "ray"
    proc = _driver(config_file, out)
    try:
        deadline = time.monotonic() + 1800
        second = None
        while time.monotonic() < deadline and proc.poll() is None:
            done = _finished_units(out)
            if done and _training(out, 1 - done[0]):
                second = 1 - done[0]
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        assert second is not None, "the second unit did not start training within the time limit"
        err = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cancelling 1 unfinished Ray task(s): victim:skull_stripped:fold" in err, err
    assert "no Ray task of this run is running any more" in err, err
    assert "rerun the same command to resume" in err, err
    _assert_stopped(out, [second])
    _assert_rerun_finishes(config_file, out, RAY, tmp_path / "local")


@pytest.mark.slow
def test_sigint_stops_the_local_pool_and_the_study_resumes(tmp_path):
    # 3 victims on 2 processes: fold 0 and fold 1 train, fold 2 waits for a free process.
    # Half the Ray test's steps: both victims start together, 150 steps to go (seconds) at SIGINT.
    training = {**CONFIG["segmenter_training"], "steps": STEPS // 2}
    config_file = _write_config(tmp_path / "inputs", folds=3, segmenter_training=training)
    out = tmp_path / "pool"
    backend = ("--backend", "local", "--jobs", "2")
    proc = _driver(config_file, out, backend)
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and proc.poll() is None:
            if _training(out, 0) and _training(out, 1):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        assert _training(out, 0) and _training(out, 1), "the victims did not start training in time"
        err = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    victims = ", ".join(f"victim:skull_stripped:fold{k}:unet" for k in (0, 1, 2))
    assert f"cancelling 3 unfinished unit(s) (2 running, 1 not started): {victims}" in err, err
    assert "no unit of this run is running any more" in err, err
    assert "killing" not in err, err  # the running units stopped at SIGINT, none had to be killed
    assert "rerun the same command to resume" in err, err
    _assert_stopped(out, [0, 1])
    assert not _training(out, 2)  # the queued victim never started
    _assert_rerun_finishes(config_file, out, backend, tmp_path / "local")
