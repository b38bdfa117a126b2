"""Interrupting a study that runs on Ray: SIGINT to the driver cancels its running task,
the command exits promptly with a clear message, nothing keeps writing into the study
folder afterwards, and a rerun finishes the study with the same files as a local run.

Made independent of timing by construction, not by sleeps: Ray gets ONE CPU, so the two
victim units run one after the other; the signal is sent once the first unit is recorded
as finished AND the second has written its first training checkpoint, i.e. while the
second is training (it has 300 steps to go, seconds to minutes)."""

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

pytest.importorskip("ray", reason="the [cluster] extra (Ray) is not installed")

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

#: The driver: a local Ray instance with one CPU, then the ordinary command line.
DRIVER = """
import os
import signal
import sys
# a terminal's Ctrl-C: a process started in the background of a non-interactive shell (CI runners,
# nohup) inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt
signal.signal(signal.SIGINT, signal.default_int_handler)
import ray
os.environ.setdefault("RAY_worker_niceness", "0")  # as RayExecutor does for a local instance
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
from napari_invert.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    from napari_invert.data.demo import make_demo_cohort

    root = tmp_path_factory.mktemp("interrupt")
    cohort = make_demo_cohort(root / "cohort", n_subjects=6, seed=3, voxel_mm=8.0, progress=False)
    data = copy.deepcopy(CONFIG)
    data["cohort"]["path"] = str(cohort)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _driver(config_file: Path, out: Path) -> subprocess.Popen:
    path = [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    args = ["study", str(config_file), "--out", str(out), "--backend", "ray", "--no-progress"]
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


@pytest.mark.slow
def test_sigint_cancels_the_ray_tasks_and_the_study_resumes(config_file, tmp_path):
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
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=300)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cancelling 1 unfinished Ray task(s): victim:skull_stripped:fold" in err, err
    assert "no Ray task of this run is running any more" in err, err
    assert "rerun the same command to resume" in err, err
    print(f"driver exited {seconds:.1f} s after SIGINT:", *err.splitlines()[-4:], sep="\n")

    # Nothing keeps running: the folder does not change any more, and no temporary file of
    # an abandoned write is left (atomic writes: '.<name>.<random><suffix>').
    before = _state(out)
    time.sleep(5)
    assert _state(out) == before
    assert not [name for name in before if Path(name).name.startswith(".")]
    steps = StudyFolder(out).read_manifest()["steps"]
    assert f"segmenter:skull_stripped:fold{second}:unet" not in steps  # really cut short
    stem = StudyFolder(out).segmenter_stem("skull_stripped", second, "unet")
    assert stem.with_name("segmenter_resume.safetensors").is_file()  # kept for the resume

    # The rerun (same command) finishes the study; it equals a study run locally.
    rerun = _driver(config_file, out)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err
    local = run_study_parallel(
        parse_config(yaml.safe_load(config_file.read_text())),
        tmp_path / "local",
        jobs=2,
        progress=False,
        backend="local",
    )
    assert _files(out) == _files(local.root)
    assert set(StudyFolder(out).read_manifest()["steps"]) == set(local.read_manifest()["steps"])
    ours, theirs = _results(out), _results(local.root)
    assert ours and ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=key)
