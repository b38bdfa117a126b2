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
    on_ray = _matrix(volumes, cache_dir=tmp_path / "c", executor=ray_executor)
    rerun_on_ray = _matrix(volumes, cache_dir=tmp_path / "d", executor=ray_executor)  # reused workers
    assert pool[(0, 0)] < pool[(0, 1)]  # the shifted copy is closest to its source
    # Bit-identical: ANTs with a fixed seed and one ITK thread is deterministic.
    for name, values in (("in process", in_process), ("ray", on_ray)):
        assert values == pool, name
    assert rerun_on_ray == on_ray


# --------------------------------------------------------------------------------------
# similarity-matrix row blocks
# --------------------------------------------------------------------------------------
def test_similarity_row_blocks_are_identical_on_both_backends(ray_executor, tmp_path):
    from napari_invert.report.matrices import SIMILARITY_METRICS, similarity_matrix
    from napari_invert.report.similarity_blocks import similarity_matrix_blocks

    rng = np.random.default_rng(4)
    originals = ndi.gaussian_filter(rng.random((4, 14, 14, 14)), (0, 1.5, 1.5, 1.5)).astype(np.float32)
    queries = (originals[[0, 1, 2, 3, 0]] + 0.05 * rng.standard_normal((5, 14, 14, 14))).astype(np.float32)
    masks = np.zeros(originals.shape, bool)
    masks[:, 2:12, 2:12, 2:12] = True
    data_range = float(originals.max() - originals.min())
    local = make_executor("local", jobs=1)
    for metric in SIMILARITY_METRICS:
        args = (metric, queries, originals, masks, data_range)
        direct = similarity_matrix(*args, device="cpu")
        by_local = similarity_matrix_blocks(*args, local, tmp_path / "local", rows_per_block=2, device="cpu")
        by_ray = similarity_matrix_blocks(
            *args, ray_executor, tmp_path / "ray", rows_per_block=2, device="cpu"
        )
        assert by_ray.shape == (5, 4)
        np.testing.assert_array_equal(by_ray, by_local, err_msg=metric)
        np.testing.assert_allclose(by_ray, direct, atol=1e-6, err_msg=metric)
        # each noisy copy is most similar to its source
        assert list(np.argmax(by_ray, axis=1)) == [0, 1, 2, 3, 0], metric
    # three blocks per metric, written once; a rerun reuses them (nothing recomputed)
    results = sorted((tmp_path / "ray").glob("*.npy"))
    assert len(results) == 3 * len(SIMILARITY_METRICS)
    stamps = [p.stat().st_mtime_ns for p in results]
    again = similarity_matrix_blocks(
        "ssim", queries, originals, masks, data_range, ray_executor, tmp_path / "ray", rows_per_block=2
    )
    assert [p.stat().st_mtime_ns for p in results] == stamps and again.shape == (5, 4)


# --------------------------------------------------------------------------------------
# membership shadow models
# --------------------------------------------------------------------------------------
MEMBERSHIP_STUDY = {
    "name": "shadows",
    "cohort": {"kind": "demo", "n_subjects": 9, "seed": 5, "demo_voxel_mm": 8.0},
    "preprocess": {"voxel_mm": None, "variants": ["skull_stripped"]},
    "folds": 3,  # 3 private / 3 held out / 3 attack per fold
    "controls": {"untrained_victim": False},
    "segmenter": {"architectures": ["unet"], "base_filters": 4, "levels": 2, "convs_per_level": 1},
    "segmenter_training": {"steps": 3, "batch_size": 2, "checkpoint_every": 3},
    "attack": {
        "taps": {"unet": ["bottleneck+skips"]},
        "decoder_base_filters": 4,
        "train": {"steps": 3, "batch_size": 2, "checkpoint_every": 3, "augment": False},
    },
    "membership": {"n_shadows": 2, "bootstrap": 200, "permutations": 200, "untrained_control": False},
    "device": "cpu",
    "num_threads": 1,
}


@pytest.mark.slow
def test_shadow_models_run_as_units_with_the_same_weights(ray_executor, tmp_path):
    from safetensors.numpy import load_file

    from napari_invert.config import parse_config
    from napari_invert.data.demo import make_demo_cohort
    from napari_invert.execution.study import shadow_units
    from napari_invert.study.layout import StudyFolder
    from napari_invert.study.runner import StudyRunner, run_study_parallel

    data = {**MEMBERSHIP_STUDY, "cohort": dict(MEMBERSHIP_STUDY["cohort"])}
    data["cohort"]["path"] = str(
        make_demo_cohort(tmp_path / "cohort", 9, seed=5, voxel_mm=8.0, progress=False)
    )
    config = parse_config(data)
    # The default: one process, shadows trained inside the victim's membership step.
    sequential = StudyRunner(config, tmp_path / "sequential", folds=[0], progress=False).run()
    # Units: the data step, then one unit per shadow, then the victim (which loads them).
    StudyRunner(config, tmp_path / "ray", folds=[], progress=False).run()
    units = shadow_units(config, tmp_path / "ray", folds=[0])
    assert [u.key for u in units] == [
        "shadow:skull_stripped:fold0:unet:0",
        "shadow:skull_stripped:fold0:unet:1",
    ]
    on_ray = run_study_parallel(config, tmp_path / "ray", jobs=1, folds=[0], progress=False, backend="ray")
    local = run_study_parallel(config, tmp_path / "local", jobs=2, folds=[0], progress=False, backend="local")
    for k in (0, 1):  # bit-identical weights (the files differ only in their random save_id)
        stems = [f.shadow_stem("skull_stripped", 0, "unet", k) for f in (sequential, on_ray, local)]
        weights = [load_file(str(s) + ".safetensors") for s in stems]
        for other in weights[1:]:
            assert other.keys() == weights[0].keys()
            for name, tensor in weights[0].items():
                np.testing.assert_array_equal(other[name], tensor, err_msg=f"shadow {k}: {name}")
    # On the executor the shadows were trained before their victim (as units of their own);
    # in the sequential run after it (inside its membership step).
    for folder, first in ((on_ray, "shadow"), (local, "shadow"), (sequential, "victim")):
        shadow = folder.shadow_stem("skull_stripped", 0, "unet", 1).with_suffix(".json").stat().st_mtime_ns
        victim = folder.segmenter_stem("skull_stripped", 0, "unet").with_suffix(".json").stat().st_mtime_ns
        assert (shadow < victim) == (first == "shadow"), folder.root
    # the victim units then give the same membership result on both backends
    docs = [
        StudyFolder(f.root).membership_json("skull_stripped", 0, "unet").read_text() for f in (on_ray, local)
    ]
    assert docs[0].replace(str(on_ray.root), "") == docs[1].replace(str(local.root), "")
    assert shadow_units(config, on_ray.root, folds=[0]) == []  # membership done: nothing left
