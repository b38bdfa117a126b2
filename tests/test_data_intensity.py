"""Intensity: percentile range, z-score, Nyul standardisation, N4, skull stripping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_invert.data.intensity import (
    NyulStandardizer,
    n4_correct,
    percentile_scale,
    skull_strip,
    zscore,
)


def _ball(n: int = 24) -> np.ndarray:
    g = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")
    return sum(x**2 for x in g) < 0.7


def test_percentile_scale_range() -> None:
    image = np.arange(1000, dtype=np.float64).reshape(10, 10, 10)
    out = percentile_scale(image, None, 10, 90)
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    # the 10th and 90th percentiles (99.9 and 899.1) land on 0 and 1, linear in between
    assert np.isclose(out.ravel()[499], (499.0 - 99.9) / (899.1 - 99.9), atol=1e-6)
    assert (out == 0).sum() == 100 and (out == 1).sum() == 100
    mask = np.zeros_like(image, dtype=bool)
    mask[5:] = True  # values 500..999
    scaled = percentile_scale(image, mask, 0, 100)
    assert scaled[mask].min() == 0.0 and scaled[mask].max() == 1.0
    assert scaled[~mask].max() == 0.0  # below the in-mask range -> clipped
    with pytest.raises(ValueError, match="constant"):
        percentile_scale(np.ones((3, 3, 3)), None)


def test_zscore_in_mask() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(50, 7, (20, 20, 20))
    mask = _ball(20)
    out = zscore(image, mask)
    assert abs(out[mask].mean()) < 1e-5 and abs(out[mask].std() - 1) < 1e-5


def test_nyul_affine_related_images_map_to_the_same_scale() -> None:
    rng = np.random.default_rng(1)
    mask = _ball()
    # a two-tissue histogram (bimodal) and an affine intensity change of it
    grey, white = rng.normal(100, 10, mask.shape), rng.normal(200, 15, mask.shape)
    a = np.where(rng.random(mask.shape) < 0.4, grey, white)
    a = np.where(mask, a, 0.0)
    b = np.where(mask, 3.5 * a + 40.0, 0.0)
    nyul = NyulStandardizer().fit([a, b], [mask, mask])
    assert nyul.n_fitted == 2
    lm = nyul.landmarks
    assert lm is not None and lm[0] == 0.0 and lm[-1] == 1.0 and np.all(np.diff(lm) > 0)
    ta, tb = nyul.transform(a, mask), nyul.transform(b, mask)
    np.testing.assert_allclose(ta[mask], tb[mask], atol=1e-5)
    # the 1st and 99th in-mask percentiles land on the ends of the standard scale
    np.testing.assert_allclose(np.percentile(ta[mask], [1, 99]), [0.0, 1.0], atol=1e-3)
    # JSON round trip gives the same mapping
    again = NyulStandardizer.from_dict(json.loads(json.dumps(nyul.to_dict())))
    np.testing.assert_array_equal(again.transform(b, mask), tb)


def test_nyul_uniform_histogram_gives_linear_landmarks() -> None:
    image = np.linspace(0, 1, 101 * 100).reshape(101, 10, 10)
    nyul = NyulStandardizer().fit([image])
    expected = (np.array(nyul.percentiles) - 1) / 98
    np.testing.assert_allclose(nyul.landmarks, expected, atol=1e-6)
    with pytest.raises(RuntimeError, match="not fitted"):
        NyulStandardizer().transform(image)


def test_skull_strip() -> None:
    image = np.full((4, 4, 4), 5.0)
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    out = skull_strip(image, mask)
    assert out.dtype == np.float32 and out.sum() == 5.0 * 8 and out[0, 0, 0] == 0


def test_n4_removes_a_smooth_multiplicative_bias() -> None:
    n = 24
    g = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")
    mask = _ball(n)
    tissue = np.where(g[0] > 0, 100.0, 60.0)
    bias = np.exp(0.4 * (g[0] + 0.5 * g[1]))
    image = (tissue * bias * mask).astype(np.float32)
    out = n4_correct(image, mask, spacing=(4.0, 4.0, 4.0), iterations=(20, 20))
    assert out.shape == image.shape and out.dtype == np.float32
    right = mask & (g[0] > 0.2)

    def cv(a: np.ndarray) -> float:
        return float(a[right].std() / a[right].mean())

    assert cv(image) > 0.08 and cv(out) < 0.3 * cv(image)
