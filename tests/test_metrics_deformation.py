"""ANTs deformation magnitude: known shifts, identical images, temp-file hygiene, workers.

Test volumes are smooth random textures at 2 mm (32^3, fills the field of view); the
moving image is the same texture translated by +2 voxels along x, i.e. +4 mm, so the
fixed -> moving map is ``p -> p + (4, 0, 0) mm``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_invert.metrics import (
    candidate_pairs,
    deformation_matrix,
    magnitude_cache_path,
    pairs_to_matrix,
    register_pair,
)
from napari_invert.metrics.deformation import PRESETS

SPACING = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def volumes() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    big = ndi.gaussian_filter(rng.standard_normal((40, 40, 40)), 2.0)
    big = ((big - big.min()) / (big.max() - big.min())).astype(np.float32)
    other = ndi.gaussian_filter(np.random.default_rng(1).standard_normal((40, 40, 40)), 2.0)
    return {
        "fixed": big[4:36, 4:36, 4:36],
        "shifted": big[2:34, 4:36, 4:36],  # moving(x) = fixed(x - 2 voxels)
        "other": other[4:36, 4:36, 4:36].astype(np.float32),
        "mask": np.pad(np.ones((24, 24, 24), bool), 4),
    }


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the process temp dir at an empty folder, to see what is left behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_identical_images_need_no_deformation(volumes: dict[str, np.ndarray], private_tmp: Path) -> None:
    fixed = volumes["fixed"]
    res = register_pair(fixed, fixed, SPACING, "fast", mask=volumes["mask"])
    assert res.displacement is not None and res.magnitude is not None
    assert res.displacement.shape == (*fixed.shape, 3) and res.displacement.dtype == np.float32
    assert res.magnitude.shape == fixed.shape and res.magnitude.dtype == np.float32
    np.testing.assert_allclose(res.magnitude, np.linalg.norm(res.displacement, axis=-1), atol=1e-5)
    assert res.mean_norm < 0.2  # mm (residual of the MI affine's sampling noise)
    assert res.total_mean_norm < 0.2
    np.testing.assert_allclose(res.affine[:3, :3], np.eye(3), atol=0.02)
    np.testing.assert_allclose(res.affine_translation, 0.0, atol=0.2)
    # ANTs wrote its transforms into a private folder that is gone again
    assert list(private_tmp.iterdir()) == []


def test_known_translation_is_recovered(volumes: dict[str, np.ndarray], private_tmp: Path) -> None:
    res = register_pair(volumes["fixed"], volumes["shifted"], SPACING, "fast", mask=volumes["mask"])
    # the affine stage carries the +4 mm shift ...
    np.testing.assert_allclose(res.affine_translation, [4.0, 0.0, 0.0], atol=0.3)
    np.testing.assert_allclose(res.affine[:3, :3], np.eye(3), atol=0.03)
    # ... the full transform moves every voxel by ~4 mm, the SyN part alone very little
    assert res.total_mean_norm == pytest.approx(4.0, abs=0.4)
    assert res.mean_norm < 0.6
    # a different subject needs a much larger non-linear deformation
    res_other = register_pair(volumes["fixed"], volumes["other"], SPACING, "fast", mask=volumes["mask"])
    assert res_other.mean_norm > 2 * res.mean_norm
    assert list(private_tmp.iterdir()) == []


def test_bad_input_raises_and_cleans_up(volumes: dict[str, np.ndarray], private_tmp: Path) -> None:
    with pytest.raises(ValueError, match="preset"):
        register_pair(volumes["fixed"], volumes["fixed"], SPACING, "slow")
    with pytest.raises(ValueError, match="spacing"):
        register_pair(volumes["fixed"], volumes["fixed"], (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        register_pair(volumes["fixed"], volumes["fixed"][:-1])
    bad = volumes["fixed"].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        register_pair(volumes["fixed"], bad)
    assert list(private_tmp.iterdir()) == []


def test_matrix_in_workers_is_deterministic_and_cached(
    volumes: dict[str, np.ndarray], tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crop = (slice(4, 28),) * 3  # 24^3: keeps the worker round trips short
    fixed_list = [volumes["fixed"][crop], volumes["other"][crop]]
    moving_list = [volumes["shifted"][crop]]
    pairs = [(0, 0), (0, 1)]
    masks = [volumes["mask"][crop], volumes["mask"][crop]]
    cache = tmp_path / "cache"
    common = {"spacing": SPACING, "preset": "fast", "masks": masks, "progress": False, "seed": 3}
    first = deformation_matrix(
        fixed_list, moving_list, pairs, workers=2, cache_dir=cache, save_magnitude=True, **common
    )
    assert set(first) == set(pairs)
    assert first[(0, 0)] < first[(0, 1)]  # the true original needs the smaller deformation
    # spawned single-threaded workers: bit-identical on a rerun (1 worker, no cache)
    again = deformation_matrix(fixed_list, moving_list, pairs, workers=1, **common)
    assert again == first
    # the cache answers without registering (a registration would raise here) and holds
    # JSON + magnitude maps, which it does not rewrite
    from napari_invert.metrics.registration import matrix

    def no_registration(task: dict) -> dict:
        raise AssertionError("a cached pair was registered again")

    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    monkeypatch.setattr(matrix, "_run_task", no_registration)
    cached = deformation_matrix(
        fixed_list, moving_list, pairs, workers=0, cache_dir=cache, save_magnitude=True, **common
    )
    assert cached == first
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    # the whole transform's displacement comes from the same cache, without registering: the
    # shifted copy's +4 mm lives in the affine stage, so it dominates the total measure
    total = deformation_matrix(
        fixed_list, moving_list, pairs, workers=0, cache_dir=cache, measure="total", **common
    )
    assert total[(0, 0)] == pytest.approx(4.0, abs=0.5) and total[(0, 0)] > first[(0, 0)] + 2.0
    with pytest.raises(ValueError, match="nonlinear, total"):
        deformation_matrix(fixed_list, moving_list, pairs, cache_dir=cache, measure="affine", **common)
    records = [json.loads(p.read_text()) for p in cache.glob("*.json")]
    assert sorted(r["mean_norm"] for r in records) == sorted(first.values())
    assert sorted(r["total_mean_norm"] for r in records) == sorted(total.values())
    assert all(r["preset"]["name"] == "fast" and r["seed"] == 3 for r in records)
    npy = magnitude_cache_path(cache, fixed_list[0], moving_list[0], SPACING, "fast", masks[0], seed=3)
    mag = np.load(npy)
    assert mag.shape == (24, 24, 24) and mag.dtype == np.float32
    assert float(mag[masks[0]].mean()) == pytest.approx(first[(0, 0)], rel=1e-5)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no half-written files
    # the workers inherited TMPDIR and removed their per-task folders
    assert [p.name for p in private_tmp.iterdir() if not p.name.startswith("pymp-")] == []


def test_pair_bookkeeping() -> None:
    full = candidate_pairs([2, 0], 3)
    assert full == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    sample = candidate_pairs([2, 0, 1], 10, sample_size=4, seed=1)
    assert len(sample) == 12
    for i, t in enumerate([2, 0, 1]):
        cols = [j for r, j in sample if r == i]
        assert t in cols and len(set(cols)) == 4
    assert candidate_pairs([2, 0, 1], 10, sample_size=4, seed=1) == sample
    mat = pairs_to_matrix({(0, 1): 2.5, (1, 0): 1.0}, (2, 3))
    assert mat[0, 1] == 2.5 and mat[1, 0] == 1.0 and np.isnan(mat).sum() == 4
    assert deformation_matrix([], [], []) == {}
    with pytest.raises(ValueError, match="out of range"):
        deformation_matrix([np.zeros((12, 12, 12))], [np.zeros((12, 12, 12))], [(0, 1)], progress=False)
    assert set(PRESETS) == {"fast", "paper"}


def test_ctrl_c_stops_the_worker_pool_and_a_rerun_registers_only_the_rest(
    volumes: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """A terminal's Ctrl-C (SIGINT to the driver and its workers) during deformation_matrix's
    local pool: queued pairs are dropped, running ones stopped, the driver says so and stops;
    the finished pairs stay cached and a rerun registers only the missing ones."""
    import os
    import signal
    import subprocess
    import sys

    crop = (slice(4, 28),) * 3
    np.save(tmp_path / "fixed.npy", np.stack([volumes["fixed"][crop], volumes["other"][crop]]))
    # 16 distinct moving images (distinct cache keys): 32 pairs, far more than 2 workers finish at once
    np.save(tmp_path / "moving.npy", np.stack([volumes["shifted"][crop] + 0.002 * k for k in range(16)]))
    np.save(tmp_path / "mask.npy", volumes["mask"][crop])
    cache = tmp_path / "cache"
    script = tmp_path / "run.py"
    script.write_text(
        "import numpy as np\n"
        "from napari_invert.metrics import deformation_matrix\n"
        "if __name__ == '__main__':  # the workers are spawned: they import this file\n"
        f"    d = {str(tmp_path)!r}\n"
        "    fixed, moving, mask = (np.load(f'{d}/{n}.npy') for n in ('fixed', 'moving', 'mask'))\n"
        "    pairs = [(m, f) for m in range(len(moving)) for f in range(len(fixed))]\n"
        "    deformation_matrix(list(fixed), list(moving), pairs, spacing=(2.0, 2.0, 2.0), preset='fast',\n"
        "        masks=[mask, mask], workers=2, cache_dir=f'{d}/cache', progress=False, seed=3)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None and not list(cache.glob("*.json")):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err
    assert "interrupted: cancelling" in err and "register moving" in err, err
    assert "no unit of this run is running any more" in err, err
    done = {p.name for p in cache.glob("*.json")}
    assert 1 <= len(done) < 32
    fixed, moving, mask = (np.load(tmp_path / f"{n}.npy") for n in ("fixed", "moving", "mask"))
    pairs = [(m, f) for m in range(len(moving)) for f in range(len(fixed))]
    values = deformation_matrix(
        list(fixed),
        list(moving),
        pairs,
        spacing=SPACING,
        preset="fast",
        masks=[mask, mask],
        workers=2,
        cache_dir=cache,
        progress=False,
        seed=3,
    )
    assert set(values) == set(pairs) and len(list(cache.glob("*.json"))) == 32
    assert done <= {p.name for p in cache.glob("*.json")}  # the finished ones were kept, not redone
