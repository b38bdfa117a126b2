"""Pearson correlation of grey levels (the paper's "MCC"): known answers and batching."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_invert.metrics import correlation_matrix, pearson_correlation
from napari_invert.metrics.correlation import masked_moments_matrix


def _smooth(rng: np.random.Generator, shape: tuple[int, int, int] = (20, 22, 18)) -> np.ndarray:
    return ndi.gaussian_filter(rng.random(shape), 2.0)


def test_affine_intensity_change_gives_one() -> None:
    x = _smooth(np.random.default_rng(0))
    assert pearson_correlation(3.5 * x + 7.0, x) == pytest.approx(1.0, abs=1e-12)
    assert pearson_correlation(-2.0 * x + 1.0, x) == pytest.approx(-1.0, abs=1e-12)
    assert pearson_correlation(x, x) == pytest.approx(1.0, abs=1e-12)


def test_matches_numpy_corrcoef_inside_mask() -> None:
    rng = np.random.default_rng(1)
    a, b = _smooth(rng), _smooth(rng)
    mask = rng.random(a.shape) > 0.6
    ref = np.corrcoef(a[mask], b[mask])[0, 1]
    assert pearson_correlation(a, b, mask) == pytest.approx(ref, abs=1e-12)
    assert pearson_correlation(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_undefined_cases_are_nan() -> None:
    x = _smooth(np.random.default_rng(2))
    assert np.isnan(pearson_correlation(np.ones_like(x), x))
    assert np.isnan(pearson_correlation(x, x, np.zeros(x.shape, bool)))
    with pytest.raises(ValueError, match="shapes differ"):
        pearson_correlation(x, x[:-1])


@pytest.mark.parametrize("use_masks", [False, True])
def test_matrix_equals_pairwise_loop(use_masks: bool) -> None:
    rng = np.random.default_rng(3)
    recons = np.stack([_smooth(rng) for _ in range(4)]).astype(np.float32)
    originals = np.stack([_smooth(rng) for _ in range(3)]).astype(np.float32)
    masks = rng.random(originals.shape) > 0.5 if use_masks else None
    # small chunks: exercises the accumulation over several voxel batches
    mat = correlation_matrix(recons, list(originals), masks=masks, device="cpu", batch_size=1000)
    assert mat.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            ref = pearson_correlation(recons[i], originals[j], None if masks is None else masks[j])
            assert mat[i, j] == pytest.approx(ref, abs=1e-10)


def test_matrix_identity_on_diagonal_and_offset_invariance() -> None:
    rng = np.random.default_rng(4)
    vols = np.stack([_smooth(rng) for _ in range(3)])
    mat = correlation_matrix(1000.0 + 5.0 * vols, vols)  # large offset: centring keeps precision
    np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-12)
    assert np.all(mat <= 1.0)


def test_moments_and_empty_mask() -> None:
    rng = np.random.default_rng(5)
    x = _smooth(rng)[None]
    y = _smooth(rng)[None]
    m = np.zeros_like(y, dtype=bool)
    m[0, 2:10, 3:12, 4:9] = True
    mom = masked_moments_matrix(x, y, m)
    assert mom.n[0, 0] == m.sum()
    assert mom.var_x[0, 0] == pytest.approx(np.var(x[0][m[0]]), rel=1e-10)
    assert mom.cov[0, 0] == pytest.approx(np.cov(x[0][m[0]], y[0][m[0]], bias=True)[0, 1], rel=1e-9)
    assert np.isnan(correlation_matrix(x, y, masks=np.zeros_like(m))[0, 0])


def test_input_validation() -> None:
    v = np.zeros((2, 12, 12, 12))
    with pytest.raises(ValueError, match="one volume"):
        correlation_matrix(v[0], v)
    with pytest.raises(ValueError, match="masks"):
        correlation_matrix(v, v, masks=np.ones((3, 12, 12, 12), bool))
    with pytest.raises(ValueError, match="shape"):
        correlation_matrix(v, np.zeros((2, 12, 12, 11)))
