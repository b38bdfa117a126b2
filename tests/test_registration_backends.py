"""Registration backends of the deformation metric: FireANTs (on the CPU here) against
known shifts and ANTs, the backend in cache keys and config, and blocks of pairs run as
units on an executor giving the same numbers as the worker pool."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_invert.config import DeformationConfig
from napari_invert.errors import ConfigError
from napari_invert.execution import make_executor
from napari_invert.metrics import DeformationResult, deformation_matrix, register_pair
from napari_invert.metrics.registration.fireants import FireantsPreset

pytest.importorskip("fireants", reason="the [gpu-registration] extra (FireANTs) is not installed")

SPACING = (2.0, 2.0, 2.0)

#: A short FireANTs schedule for 24^3 test volumes (the "fast" preset's shape, fewer steps;
#: a CC affine, as MI is slow on a CPU and these sharp test volumes need no MI).
QUICK = FireantsPreset(
    name="quick",
    aff_scales=(2, 1),
    aff_iterations=(60, 30),
    def_scales=(2,),
    def_iterations=(30,),
    aff_loss="cc",
)


@pytest.fixture(scope="module")
def volumes() -> dict[str, np.ndarray]:
    """Smooth random 'brains' (24^3 at 2 mm) inside a zero margin."""
    rng = np.random.default_rng(0)
    big = ndi.gaussian_filter(rng.standard_normal((36, 36, 36)), 2.0)
    big = ((big - big.min()) / (big.max() - big.min())).astype(np.float32)
    inside = np.zeros((36, 36, 36), bool)
    inside[8:28, 8:28, 8:28] = True
    big = np.where(inside, big, 0).astype(np.float32)
    other = ndi.gaussian_filter(np.random.default_rng(1).standard_normal((36, 36, 36)), 2.0)
    other = np.where(inside, (other - other.min()) / np.ptp(other), 0).astype(np.float32)
    return {
        "fixed": big[6:30, 6:30, 6:30],
        "shifted": big[4:28, 6:30, 6:30],  # moving(x) = fixed(x - 2 voxels) -> +4 mm along axis 0
        "other": other[6:30, 6:30, 6:30],
        "mask": inside[6:30, 6:30, 6:30],
    }


@pytest.mark.slow
def test_fireants_on_cpu_finds_a_known_shift(volumes):
    fixed, mask = volumes["fixed"], volumes["mask"]
    res = register_pair(fixed, volumes["shifted"], SPACING, QUICK, mask, backend="fireants", device="cpu")
    assert isinstance(res, DeformationResult) and res.backend == "fireants"
    # the content at fixed point p is at p + 4 mm along axis 0 in the moving image
    np.testing.assert_allclose(res.affine_translation, [4.0, 0.0, 0.0], atol=0.5)
    assert res.displacement.shape == (*volumes["fixed"].shape, 3)
    assert res.magnitude.shape == volumes["fixed"].shape
    # a shift is explained by the affine stage: little non-linear deformation is left,
    # far less than a different subject needs
    other = register_pair(fixed, volumes["other"], SPACING, QUICK, mask, backend="fireants", device="cpu")
    assert res.mean_norm < 1.0 < other.mean_norm
    identical = register_pair(fixed, fixed, SPACING, QUICK, mask, backend="fireants", device="cpu")
    assert identical.mean_norm < 0.2 and np.abs(identical.affine_translation).max() < 0.2


@pytest.mark.slow
def test_fireants_and_ants_agree_on_which_original_is_closer(volumes):
    fixed = [volumes["fixed"], volumes["other"]]
    for backend, preset in (("ants", "fast"), ("fireants", QUICK)):
        values = [
            register_pair(f, volumes["shifted"], SPACING, preset, volumes["mask"], backend=backend).mean_norm
            for f in fixed
        ]
        assert values[0] < values[1], backend


@pytest.mark.slow
def test_backend_is_part_of_the_cache_key(volumes, tmp_path):
    fixed_list = [volumes["fixed"], volumes["other"]]
    common = {"spacing": SPACING, "preset": QUICK, "progress": False, "workers": 0, "cache_dir": tmp_path}
    pairs = [(0, 0), (0, 1)]
    fa = deformation_matrix(fixed_list, [volumes["shifted"]], pairs, backend="fireants", **common)
    direct = register_pair(volumes["fixed"], volumes["shifted"], SPACING, QUICK, backend="fireants")
    assert fa[(0, 0)] == pytest.approx(direct.mean_norm, abs=1e-6)  # deterministic on the CPU
    records = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(records) == 2 and {r["backend"] for r in records} == {"fireants"}
    # ANTs results are stored under other keys: nothing of FireANTs' is reused for ANTs
    deformation_matrix(
        fixed_list, [volumes["shifted"]], [(0, 0)], backend="ants", **{**common, "preset": "fast"}
    )
    assert len(list(tmp_path.glob("*.json"))) == 3


@pytest.mark.slow
def test_blocks_on_an_executor_match_the_worker_pool(volumes, tmp_path):
    fixed_list = [volumes["fixed"], volumes["other"]]
    moving = [volumes["shifted"], volumes["other"]]
    pairs = [(0, 0), (0, 1), (1, 0)]
    common = {"spacing": SPACING, "preset": "fast", "masks": [volumes["mask"]] * 2, "progress": False}
    pool = deformation_matrix(fixed_list, moving, pairs, workers=2, **common)
    executor = make_executor("local", jobs=2)
    blocks = deformation_matrix(
        fixed_list, moving, pairs, cache_dir=tmp_path / "c", executor=executor, **common
    )
    # Identical values: blocks register with one ITK thread, in a fresh child process when
    # this one already ran ANTs multi-threaded (tests/test_execution_units.py).
    assert blocks == pool
    assert blocks[(0, 0)] < blocks[(0, 1)]  # the shifted copy is still closer to its source
    # content-addressed inputs: "other" is a fixed and a moving image but stored once
    assert len(list((tmp_path / "c" / "inputs").glob("*.npy"))) == 4
    with pytest.raises(ValueError, match="cache_dir"):
        deformation_matrix(fixed_list, moving, pairs, executor=make_executor("local"), **common)


def test_backend_choices_are_checked(volumes):
    with pytest.raises(ValueError, match="unknown registration backend"):
        register_pair(volumes["fixed"], volumes["fixed"], SPACING, backend="elastix")
    assert DeformationConfig().backend == "ants"
    assert DeformationConfig(backend="fireants").backend == "fireants"
    with pytest.raises(ValueError):
        DeformationConfig(backend="elastix")


def test_cuda_without_a_gpu_is_a_clear_error(volumes):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the error path cannot occur")
    with pytest.raises(ConfigError, match="no CUDA device"):
        register_pair(volumes["fixed"], volumes["fixed"], SPACING, backend="fireants", device="cuda")


def test_level_floor_lets_a_small_grid_keep_its_pyramid():
    """FireANTs' 32-voxel floor on pyramid levels is lowered for the call and restored."""
    import fireants.registration.affine as affine
    import fireants.registration.greedy as greedy

    from napari_invert.metrics.registration.fireants import level_floor

    assert greedy.MIN_IMG_SIZE == affine.MIN_IMG_SIZE == 32
    # the fast preset's 1/4 level of a 40x48x40 grid: 32^3 under FireANTs' floor, 10x12x10 here
    with level_floor(8):
        assert [max(int(n / 4), greedy.MIN_IMG_SIZE) for n in (40, 48, 40)] == [10, 12, 10]
    assert greedy.MIN_IMG_SIZE == affine.MIN_IMG_SIZE == 32
    with pytest.raises(RuntimeError), level_floor(8):
        raise RuntimeError("a failed registration")
    assert greedy.MIN_IMG_SIZE == 32
    assert FireantsPreset("x", (1,), (1,), (1,), (1,)).as_dict()["min_level_voxels"] == 8  # in cache keys
