"""The executor interface: a tiny study run as (variant, fold, architecture) units on the
local process pool and on a local Ray instance gives the same files and numbers as a
sequential run; an interrupted Ray run resumes; units and configs are validated."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_inputs import TINY_STUDY, demo_cohort_for, with_cohort

from napari_invert.config import parse_config
from napari_invert.errors import ConfigError
from napari_invert.execution import Unit, UnitFailed, make_executor
from napari_invert.execution.study import study_units
from napari_invert.study.layout import StudyFolder
from napari_invert.study.runner import StudyRunner, run_study_parallel

TINY = {**TINY_STUDY, "num_threads": 1}


@pytest.fixture(scope="module")
def demo_cohort(tmp_path_factory) -> Path:
    return demo_cohort_for(TINY, tmp_path_factory.mktemp("cohort"))


def _data(demo_cohort: Path, **changes) -> dict:
    return with_cohort(TINY, demo_cohort, **changes)


def _files(root: Path) -> set[str]:
    """Result files (resume checkpoints, caches and the manifest excluded)."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and "_resume" not in p.name
        and "cache" not in p.parts
        and p.name not in ("manifest.json", "manifest.lock")
    }


def _recons(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(nib.load(p).dataobj) for p in root.rglob("recon/*.nii.gz")}


def _assert_same_study(a: Path, b: Path) -> None:
    assert _files(a) == _files(b)
    assert set(StudyFolder(a).read_manifest()["steps"]) == set(StudyFolder(b).read_manifest()["steps"])
    assert StudyFolder(a).read_cohort() == StudyFolder(b).read_cohort()
    ra, rb = _recons(a), _recons(b)
    assert ra and ra.keys() == rb.keys()
    for key in ra:
        np.testing.assert_allclose(ra[key], rb[key], atol=1e-5, err_msg=key)


@pytest.fixture(scope="module")
def local_run(demo_cohort, tmp_path_factory) -> Path:
    """The reference: the study as units on the local backend (2 spawned processes)."""
    config = parse_config(_data(demo_cohort))
    out = tmp_path_factory.mktemp("local") / "study"
    return run_study_parallel(config, out, jobs=2, progress=False, backend="local").root


def test_units_are_one_victim_each_with_resources(demo_cohort, tmp_path):
    config = parse_config(
        _data(demo_cohort, execution={"backend": "ray", "cpus_per_task": 2, "gpus_per_task": 0.25})
    )
    units = study_units(config, tmp_path, folds=[1])
    keys = ["victim:skull_stripped:fold1:unet", "victim:skull_stripped:fold1:segnet"]
    assert [u.key for u in units] == keys
    assert all(u.cpus == 2 and u.gpus == 0.25 for u in units)
    assert units[0].paths == {"out": str(tmp_path.resolve())}
    assert units[0].config["study"]["execution"]["backend"] == "ray"


@pytest.mark.slow
def test_local_units_give_every_step_of_a_sequential_run(demo_cohort, local_run, tmp_path):
    manifest = StudyFolder(local_run).read_manifest()
    assert manifest["last_run_backend"] == "local" and manifest["last_run_seconds"] > 0
    expected = {"data:skull_stripped"} | {
        f"{kind}:skull_stripped:fold{f}:{arch}" + (f":{tap}" if kind == "attack" else "")
        for f in (0, 1)
        for kind in ("segmenter", "attack")
        for arch, tap in (("unet", "bottleneck+skips"), ("segnet", "bottleneck+indices"))
    }
    assert set(manifest["steps"]) == expected
    # cohort.json describes the whole study although each unit ran one variant only.
    assert StudyFolder(local_run).read_cohort()["variants"] == ["skull_stripped"]
    # The same files as the plain sequential runner (numbers differ: see victim_unit's seed).
    sequential = StudyRunner(parse_config(_data(demo_cohort)), tmp_path, progress=False).run()
    assert _files(sequential.root) == _files(local_run)


@pytest.mark.slow
def test_ray_backend_matches_the_local_backend(demo_cohort, local_run, ray_local, tmp_path):
    # execution.backend in the config selects Ray; it is a runtime key, so the same folder
    # can later be resumed with the local backend.
    config = parse_config(_data(demo_cohort, execution={"backend": "ray"}))
    folder = run_study_parallel(config, tmp_path / "ray", jobs=1, progress=False)
    assert folder.read_manifest()["last_run_backend"] == "ray"
    _assert_same_study(folder.root, local_run)
    # Rerunning with the other backend finds everything done and recomputes nothing.
    before = folder.read_manifest()["steps"]
    run_study_parallel(parse_config(_data(demo_cohort)), folder.root, jobs=2, progress=False)
    assert folder.read_manifest()["steps"] == before


@pytest.mark.slow
def test_a_partial_ray_run_resumes(demo_cohort, local_run, ray_local, tmp_path):
    # A run that stopped part-way (here: only fold 0 ran) is finished by rerunning: the steps
    # already done are not redone, and the result equals a local run. (Interrupting the driver
    # with SIGINT is not tested: Ray tasks already running finish their units after the driver
    # stops, so what is left to resume depends on timing.)
    out = tmp_path / "study"
    run_study_parallel(
        parse_config(_data(demo_cohort)), out, jobs=1, folds=[0], progress=False, backend="ray"
    )
    partial = StudyFolder(out).read_manifest()["steps"]
    total = StudyFolder(local_run).read_manifest()["steps"]
    assert 0 < len(partial) < len(total)

    folder = run_study_parallel(parse_config(_data(demo_cohort)), out, jobs=1, progress=False, backend="ray")
    resumed = folder.read_manifest()["steps"]
    for key, info in partial.items():  # finished before: not redone
        assert resumed[key]["finished"] == info["finished"], key
    _assert_same_study(out, local_run)


def test_a_failing_unit_is_reported_by_key():
    executor = make_executor("local", jobs=1)
    bad = Unit(key="broken", func="napari_invert.execution.base:no_such_function", config={}, paths={})
    with pytest.raises(UnitFailed, match="broken: AttributeError"):
        executor.map([bad], progress=False)


def test_units_and_execution_config_are_validated(demo_cohort):
    with pytest.raises(ValueError, match="JSON-ready"):
        Unit(key="k", func="m:f", config={"a": object()})
    with pytest.raises(ValueError, match="cpus"):
        Unit(key="k", func="m:f", config={}, cpus=0)
    with pytest.raises(ValueError, match="gpus"):
        Unit(key="k", func="m:f", config={}, gpus=1.5)
    with pytest.raises(ConfigError, match=r"execution\.gpus_per_task"):
        parse_config(_data(demo_cohort, execution={"gpus_per_task": 1.5}))
    with pytest.raises(ConfigError, match=r"execution\.backend"):
        parse_config(_data(demo_cohort, execution={"backend": "dask"}))
    with pytest.raises(ConfigError, match="unknown backend"):
        make_executor("dask")


def test_changing_the_backend_keeps_the_study_folder(demo_cohort, tmp_path):
    from napari_invert.study.runner import _RUNTIME_KEYS

    assert "execution" in _RUNTIME_KEYS
    StudyRunner(parse_config(_data(demo_cohort)), tmp_path, folds=[], progress=False).run()
    other = parse_config(_data(demo_cohort, execution={"backend": "ray", "address": "auto"}))
    StudyRunner(other, tmp_path, folds=[], progress=False).run()  # not refused
