"""Windowed SSIM (Wang et al.; == scikit-image) and the paper's global SSIM.

Known answers: identical images score 1; the windowed SSIM equals
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=L)`` (mean within 1e-4, here ~1e-12 in float64)
on random smooth volumes and on a real LPBA40 slab; the global SSIM equals a plain NumPy
formula.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.metrics import structural_similarity

from napari_invert.metrics import (
    WindowedSSIM,
    common_data_range,
    ssim_global,
    ssim_global_matrix,
    ssim_map,
    ssim_matrix,
    ssim_windowed,
)


def _skimage(a: np.ndarray, b: np.ndarray, dr: float, full: bool = False):  # type: ignore[no-untyped-def]
    return structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=dr,
        full=full,
    )


def _pair(seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = ndi.gaussian_filter(rng.random(shape), 1.5)
    b = 0.8 * a + 0.2 * ndi.gaussian_filter(rng.random(shape), 1.0) + 0.05
    return a, b


@pytest.fixture(scope="module")
def lpba_slab(lpba40: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40^3 crops (1 mm) around the centre of LPBA40 S01 and S02, plus S01's mask."""
    import nibabel as nib

    vols = []
    for sid in ("S01", "S02"):
        img = nib.load(lpba40 / "images" / f"{sid}.nii.gz")
        vols.append(np.asarray(img.dataobj[60:100, 76:116, 60:100], dtype=np.float64))
    return vols[0], vols[1], vols[0] > 0


def test_identical_images_score_one() -> None:
    a, _ = _pair(0, (24, 26, 22))
    assert ssim_windowed(a, a, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert ssim_windowed(a, a, 1.0, mask=a > a.mean()) == pytest.approx(1.0, abs=1e-12)
    assert ssim_global(a, a, a > a.mean(), 1.0) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(ssim_map(a, a, 1.0), 1.0, atol=1e-6)
    mat = ssim_matrix(np.stack([a, 2 * a]), np.stack([a, 2 * a]), 2.0, device="cpu")
    np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-6)
    assert mat[0, 1] < 0.99


@pytest.mark.parametrize(
    ("seed", "shape", "data_range"),
    [(0, (24, 24, 24), 1.0), (1, (30, 27, 33), 1.0), (2, (11, 16, 13), 2.5), (3, (40, 36, 20), 0.7)],
)
def test_matches_skimage_on_smooth_volumes(seed: int, shape: tuple[int, int, int], data_range: float) -> None:
    a, b = _pair(seed, shape)
    ref, ref_map = _skimage(a, b, data_range, full=True)
    value, our_map = ssim_windowed(a, b, data_range, return_map=True)
    assert abs(value - ref) < 1e-10
    np.testing.assert_allclose(our_map, ref_map, atol=1e-6)  # boundary (reflect) included
    # float32 path (what ssim_matrix uses) still well within 1e-4
    v32 = ssim_windowed(a.astype(np.float32), b.astype(np.float32), data_range, dtype=torch.float32)
    assert abs(v32 - ref) < 1e-5


def test_matches_skimage_on_lpba40_slab(lpba_slab: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    a, b, _ = lpba_slab
    dr = common_data_range([a, b])
    ref = _skimage(b, a, dr)
    assert abs(ssim_windowed(b, a, dr) - ref) < 1e-10
    assert abs(ssim_matrix(b[None], a[None], dr, device="cpu")[0, 0] - ref) < 1e-4
    assert 0.0 < ref < 0.9  # different subjects: clearly below 1


def test_filter_is_scipy_gaussian_with_reflect_boundary() -> None:
    rng = np.random.default_rng(7)
    v = rng.random((13, 17, 12))
    m = WindowedSSIM(1.0, device="cpu", dtype=torch.float64)
    ours = m.filter(torch.from_numpy(v)[None])[0].numpy()
    ref = ndi.gaussian_filter(v, 1.5, truncate=3.5, mode="reflect")
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert m.win_size == 11 and m.radius == 5


def test_masked_mean_is_mean_of_map_over_mask() -> None:
    a, b = _pair(4, (26, 24, 28))
    mask = np.zeros(a.shape, bool)
    mask[0:12, 3:20, 10:28] = True  # touches the volume border: reflect boundary matters
    value, smap = ssim_windowed(a, b, 1.0, mask=mask, return_map=True)
    assert value == pytest.approx(smap[mask].mean(dtype=np.float64), abs=1e-6)
    _, ref_map = _skimage(a, b, 1.0, full=True)
    assert value == pytest.approx(ref_map[mask].mean(), abs=1e-10)
    assert np.isnan(ssim_windowed(a, b, 1.0, mask=np.zeros_like(mask)))


@pytest.mark.parametrize("use_masks", [False, True])
def test_matrix_equals_pairwise_loop(use_masks: bool) -> None:
    rng = np.random.default_rng(5)
    originals = [ndi.gaussian_filter(rng.random((22, 24, 20)), 1.5) for _ in range(3)]
    recons = [0.7 * o + 0.3 * ndi.gaussian_filter(rng.random(o.shape), 2.0) for o in originals]
    recons.append(np.full_like(originals[0], 0.5))  # a flat "prior"
    masks = None
    if use_masks:
        masks = np.stack([ndi.binary_erosion(o > np.median(o), iterations=1) for o in originals])
    mat = ssim_matrix(recons, np.stack(originals), 1.0, masks=masks, device="cpu")
    assert mat.shape == (4, 3)
    loop = np.array(
        [
            [
                ssim_windowed(r, o, 1.0, mask=None if masks is None else masks[j])
                for j, o in enumerate(originals)
            ]
            for r in recons
        ]
    )
    np.testing.assert_allclose(mat, loop, atol=1e-5)
    assert np.all(np.argmax(mat[:3], axis=1) == np.arange(3))  # true pair wins
    # blocked processing (tiny memory budget) and batched pairs give the same numbers
    blocked = ssim_matrix(
        recons, originals, 1.0, masks=masks, device="cpu", batch_size=2, memory_budget_gb=1e-9
    )
    np.testing.assert_allclose(blocked, mat, atol=1e-6)


def test_windowed_ssim_module_on_batches_and_gradients() -> None:
    a, b = _pair(6, (20, 20, 20))
    x = torch.from_numpy(np.stack([a, b]))[:, None].float()
    y = torch.from_numpy(np.stack([b, b]))[:, None].float()
    m = WindowedSSIM(1.0, device="cpu")
    vals = m(x, y)
    assert vals.shape == (2,)
    assert vals[0].item() == pytest.approx(_skimage(a, b, 1.0), abs=1e-5)
    assert vals[1].item() == pytest.approx(1.0, abs=1e-6)
    smap = m.map(x, y)
    assert smap.shape == x.shape
    xg = x.clone().requires_grad_(True)
    loss = 1 - m(xg, y).mean()
    loss.backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., 5:15, 5:15, 5:15] = True
    assert m(x, y, mask=mask)[0].item() == pytest.approx(smap[0][mask[0]].mean().item(), abs=1e-6)


def _global_reference(x: np.ndarray, y: np.ndarray, mask: np.ndarray, dr: float) -> float:
    xs, ys = x[mask].astype(np.float64), y[mask].astype(np.float64)
    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    cov = np.cov(xs, ys, bias=True)
    lum = (2 * xs.mean() * ys.mean() + c1) / (xs.mean() ** 2 + ys.mean() ** 2 + c1)
    cs = (2 * cov[0, 1] + c2) / (cov[0, 0] + cov[1, 1] + c2)
    return float(lum * cs)


def test_global_ssim_against_numpy_formula() -> None:
    rng = np.random.default_rng(8)
    originals = np.stack([ndi.gaussian_filter(rng.random((16, 18, 14)), 1.0) for _ in range(3)])
    recons = np.stack([0.5 * o + 0.3 for o in originals] + [originals.mean(0)])
    masks = originals > 0.5
    for i in range(4):
        for j in range(3):
            ref = _global_reference(recons[i], originals[j], masks[j], 1.0)
            assert ssim_global(recons[i], originals[j], masks[j], 1.0) == pytest.approx(ref, abs=1e-12)
    mat = ssim_global_matrix(recons, originals, 1.0, masks=masks, device="cpu", batch_size=777)
    loop = np.array([[ssim_global(r, o, m, 1.0) for o, m in zip(originals, masks)] for r in recons])
    np.testing.assert_allclose(mat, loop, atol=1e-12)
    unmasked = ssim_global_matrix(recons, originals, 1.0)
    assert unmasked[0, 0] == pytest.approx(ssim_global(recons[0], originals[0], None, 1.0), abs=1e-12)


def test_global_ssim_on_lpba40(lpba_slab: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    a, b, mask = lpba_slab
    ref = _global_reference(b, a, mask, 1.0)
    assert ssim_global(b, a, mask, 1.0) == pytest.approx(ref, abs=1e-12)
    assert ssim_global(a, a, mask, 1.0) == pytest.approx(1.0)


def test_pitfalls_raise() -> None:
    a, b = _pair(9, (16, 16, 16))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="data_range"):
            ssim_windowed(a, b, bad)
        with pytest.raises(ValueError, match="data_range"):
            ssim_global(a, b, None, bad)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim_windowed(a[:10], b[:10], 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim_windowed(a, b[:-1], 1.0)
    with pytest.raises(ValueError, match="masks"):
        ssim_matrix(a[None], b[None], 1.0, masks=np.ones((2, 16, 16, 16), bool))
    # scaling both images changes SSIM unless data_range scales with them
    assert ssim_windowed(10 * a, 10 * b, 10.0) == pytest.approx(ssim_windowed(a, b, 1.0), abs=1e-9)
    assert ssim_windowed(10 * a, 10 * b, 1.0) != pytest.approx(ssim_windowed(a, b, 1.0), abs=1e-3)
