"""Geometry: exact reorientation and crop/pad round trips, resampling within tolerance."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_invert.data.geometry import (
    GridRecord,
    bounding_box,
    centred_window,
    crop_or_pad,
    isotropic_grid,
    next_multiple,
    reorient_from_ras,
    reorient_to_ras,
    resample,
)

LPS = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 126], [0, 0, 1.0, -72], [0, 0, 0, 1]])
PSR = np.array([[0, 0, 2.0, -88], [-2.0, 0, 0, 118], [0, 2.0, 0, -135], [0, 0, 0, 1]])


def _world(affine: np.ndarray, idx: tuple[int, int, int]) -> np.ndarray:
    return (affine @ np.array([*idx, 1.0]))[:3]


@pytest.mark.parametrize(("affine", "codes"), [(LPS, ("L", "P", "S")), (PSR, ("P", "S", "R"))])
def test_reorientation_round_trip_exact(affine: np.ndarray, codes: tuple[str, ...]) -> None:
    assert nib.aff2axcodes(affine) == codes
    arr = np.random.default_rng(0).random((5, 6, 7))
    ras, ras_affine, ornt = reorient_to_ras(arr, affine)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    np.testing.assert_array_equal(reorient_from_ras(ras, ornt), arr)
    # the same voxel keeps its world position
    i = (1, 2, 3)
    j = np.linalg.solve(ras_affine, np.array([*_world(affine, i), 1.0]))[:3]
    j_int = tuple(round(float(v)) for v in j)
    np.testing.assert_allclose(j, j_int, atol=1e-9)
    assert ras[j_int] == arr[i]
    record = GridRecord.plan(arr.shape, affine)
    assert record.ras_shape == ras.shape
    back, aff = record.to_native(record.to_model(arr, order=0), order=0)
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_array_equal(aff, affine)


def test_psr_shape_is_permuted() -> None:
    record = GridRecord.plan((120, 120, 90), PSR, None)
    assert record.resampled_shape == (90, 120, 120)


def test_crop_pad_round_trip_exact() -> None:
    rng = np.random.default_rng(1)
    arr = rng.random((10, 12, 9)).astype(np.float32)
    padded = crop_or_pad(arr, (-3, -2, 0), (16, 16, 16))
    assert padded.shape == (16, 16, 16)
    assert padded[:3].sum() == 0 and padded[13:].sum() == 0
    np.testing.assert_array_equal(crop_or_pad(padded, (3, 2, 0), arr.shape), arr)
    # cropping then un-cropping is exact where the data is inside the window
    blob = np.zeros((20, 20, 20), np.int16)
    blob[5:15, 6:12, 4:16] = rng.integers(1, 9, (10, 6, 12))
    start, stop = bounding_box(blob > 0)
    assert (start, stop) == ((5, 6, 4), (15, 12, 16))
    offset, shape = centred_window(start, stop, 8)
    assert shape == (16, 8, 16) and offset == (2, 5, 2)
    cropped = crop_or_pad(blob, offset, shape)
    np.testing.assert_array_equal(crop_or_pad(cropped, [-o for o in offset], blob.shape), blob)


def test_next_multiple() -> None:
    assert [next_multiple(n, 16) for n in (1, 16, 17, 133)] == [16, 16, 32, 144]


def test_isotropic_grid_keeps_centre_and_fov() -> None:
    shape, affine = isotropic_grid((160, 192, 160), np.eye(4), 3.0)
    assert shape == (53, 64, 53)
    centre = (np.array(shape) - 1) / 2
    np.testing.assert_allclose(_world(affine, centre), [79.5, 95.5, 79.5])


def _gaussian(shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    return np.exp(-sum(g**2 for g in grids) / (2 * sigma**2)).astype(np.float32)


def test_resample_and_back_within_tolerance() -> None:
    """1 mm LPS -> RAS 2 mm -> 1 mm LPS: max error < 0.05, mean < 0.005 (unit-height
    Gaussian, sigma 8 mm); the world position of the peak is kept."""
    vol = _gaussian((48, 52, 44), 8.0)
    record = GridRecord.plan(vol.shape, LPS, 2.0)
    assert record.resampled_shape == (24, 26, 22)
    model = record.to_model(vol)
    back, affine = record.to_native(model)
    np.testing.assert_array_equal(affine, LPS)
    err = np.abs(back - vol)
    assert err.max() < 0.05 and err.mean() < 0.005
    # the blob's centre of mass stays at the same world position (within 0.1 mm)
    com_native = _world(LPS, ndimage.center_of_mass(vol))
    com_model = _world(record.affine, ndimage.center_of_mass(model))
    assert np.linalg.norm(com_native - com_model) < 0.1


def test_window_and_inverse_with_resampling() -> None:
    vol = _gaussian((40, 40, 40), 6.0)
    record = GridRecord.plan(vol.shape, PSR, 3.0)
    record = record.with_window((-2, 3, 1), (32, 16, 24))
    model = record.to_model(vol)
    assert model.shape == (32, 16, 24)
    np.testing.assert_allclose(record.affine[:3, 3], _world(record.resampled_affine, (-2, 3, 1)))
    back, affine = record.to_native(model)
    assert back.shape == vol.shape
    np.testing.assert_array_equal(affine, PSR)
    restored = GridRecord.from_dict(record.to_dict())
    np.testing.assert_array_equal(restored.to_native(model)[0], back)


def test_label_resampling_nearest_keeps_values_and_masks_stay_bool() -> None:
    labels = np.zeros((30, 30, 30), np.int64)
    labels[5:15, 5:25, 5:25] = 7
    labels[15:25, 5:25, 5:25] = 42
    record = GridRecord.plan(labels.shape, np.eye(4), 2.0)
    out = record.to_model(labels, order=0)
    assert out.dtype == np.int64 and set(np.unique(out).tolist()) == {0, 7, 42}
    mask = record.to_model(labels > 0, order=1)
    assert mask.dtype == np.bool_
    with pytest.raises(ValueError, match="order=0"):
        resample(labels, np.eye(4), (5, 5, 5), np.eye(4) * 2, order=1)
    back, _ = record.to_native(out, order=0)
    # nearest neighbour at a factor of 2 may move a boundary by one voxel, never more
    interior = ndimage.minimum_filter(labels, size=3) == ndimage.maximum_filter(labels, size=3)
    np.testing.assert_array_equal(back[interior], labels[interior])
    assert (back != labels).sum() < 0.15 * labels.size
