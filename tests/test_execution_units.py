"""Units of work other than whole victims, on the local and the Ray backend: blocks of
registration pairs give identical mean displacements everywhere (ITK pinned to one thread,
also in a process where ANTs already ran multi-threaded) and on a rerun."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_invert.execution import make_executor
from napari_invert.metrics import deformation_matrix
from napari_invert.metrics.registration import matrix as matrix_module
from napari_invert.metrics.registration.threads import ITK_THREADS_ENV, itk_pinned

SPACING = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def volumes() -> dict[str, np.ndarray]:
    """Smooth random 'brains' (24^3 at 2 mm) inside a zero margin; a shifted copy."""
    inside = np.zeros((36, 36, 36), bool)
    inside[8:28, 8:28, 8:28] = True
    vols = []
    for seed in (0, 1):
        v = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal((36, 36, 36)), 2.0)
        vols.append(np.where(inside, (v - v.min()) / np.ptp(v), 0).astype(np.float32))
    return {
        "fixed": vols[0][6:30, 6:30, 6:30],
        "shifted": vols[0][4:28, 6:30, 6:30],
        "other": vols[1][6:30, 6:30, 6:30],
        "mask": inside[6:30, 6:30, 6:30],
    }


@pytest.fixture(scope="module")
def ray_executor():
    """The Ray backend on a local instance with 2 CPUs (no cluster), shut down afterwards."""
    ray = pytest.importorskip("ray", reason="the [cluster] extra (Ray) is not installed")
    yield make_executor("ray", init_kwargs={"num_cpus": 2, "include_dashboard": False})
    ray.shutdown()


def _matrix(volumes, **kwargs) -> dict[tuple[int, int], float]:
    return deformation_matrix(
        [volumes["fixed"], volumes["other"]],
        [volumes["shifted"]],
        [(0, 0), (0, 1)],
        spacing=SPACING,
        preset="fast",
        masks=[volumes["mask"]] * 2,
        progress=False,
        **kwargs,
    )


@pytest.mark.slow
def test_registration_blocks_are_identical_on_every_backend(volumes, ray_executor, tmp_path, monkeypatch):
    # The reference: the worker pool (spawned processes, one ITK thread each).
    pool = _matrix(volumes, workers=1)
    # Make ANTs multi-threaded in THIS process, as in an interpreter that used it before
    # (unless ITK already ran here): an in-process block must not register with it.
    if "ants" not in sys.modules:
        monkeypatch.setenv(ITK_THREADS_ENV, "2")
        _matrix(volumes, workers=0)
        assert not itk_pinned()
    # jobs=1: the block runs in this process's executor, which hands it to a fresh
    # single-threaded child because its own ITK cannot be pinned any more.
    in_process = _matrix(volumes, cache_dir=tmp_path / "a", executor=make_executor("local", jobs=1))
    # two blocks in two spawned processes
    monkeypatch.setattr(matrix_module, "BLOCK_SIZE", 1)
    spawned = _matrix(volumes, cache_dir=tmp_path / "b", executor=make_executor("local", jobs=2))
    on_ray = _matrix(volumes, cache_dir=tmp_path / "c", executor=ray_executor)
    rerun_on_ray = _matrix(volumes, cache_dir=tmp_path / "d", executor=ray_executor)  # reused workers
    assert pool[(0, 0)] < pool[(0, 1)]  # the shifted copy is closest to its source
    # Bit-identical: ANTs with a fixed seed and one ITK thread is deterministic.
    for name, values in (("in process", in_process), ("spawned", spawned), ("ray", on_ray)):
        assert values == pool, name
    assert rerun_on_ray == on_ray
