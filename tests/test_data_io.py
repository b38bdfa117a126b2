"""NIfTI IO: known shapes of the real data, round trips, and every bad-input class
written as a real broken file."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_invert.data.nifti import load_nifti, read_header, save_nifti
from napari_invert.errors import DataError

AFFINE = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, -12], [0, 0, 2.0, 5], [0, 0, 0, 1]])


def _write(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_lpba40_image_and_labels(lpba40: Path) -> None:
    img = load_nifti(lpba40 / "images" / "S01.nii.gz", "image")
    assert img.shape == (160, 192, 160)
    assert img.array.dtype == np.float32
    assert img.spacing == (1.0, 1.0, 1.0)
    assert img.axcodes == ("L", "P", "S")
    assert img.array.min() == 0.0 and 0.99 < img.array.max() <= 1.0
    lab = load_nifti(lpba40 / "labels" / "S01.nii.gz", "label")
    assert lab.array.dtype == np.int64
    values = set(np.unique(lab.array).tolist()) - {0}
    assert len(values) == 56 and min(values) == 21 and max(values) == 182
    np.testing.assert_array_equal(img.affine, lab.affine)


def test_ixi_header(ixi: Path) -> None:
    shape, affine = read_header(ixi / "t1" / "IXI012-HH-1211.nii.gz")
    assert shape == (120, 120, 90)
    assert nib.aff2axcodes(affine) == ("P", "S", "R")
    np.testing.assert_allclose(np.abs(affine[:3, :3]).sum(axis=0), [2.0, 2.0, 2.0])


def test_save_load_round_trip_and_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 7, 8)).astype(np.float32)
    labels = rng.integers(0, 300, size=(6, 7, 8))
    mask = image > 0
    save_nifti(tmp_path / "img.nii.gz", image, AFFINE)
    save_nifti(tmp_path / "lab.nii.gz", labels, AFFINE)
    save_nifti(tmp_path / "small.nii.gz", labels % 100, AFFINE)
    save_nifti(tmp_path / "mask.nii.gz", mask, AFFINE)
    assert nib.load(tmp_path / "img.nii.gz").get_data_dtype() == np.float32
    assert nib.load(tmp_path / "lab.nii.gz").get_data_dtype() == np.int16
    assert nib.load(tmp_path / "small.nii.gz").get_data_dtype() == np.uint8
    assert nib.load(tmp_path / "mask.nii.gz").get_data_dtype() == np.uint8
    np.testing.assert_array_equal(load_nifti(tmp_path / "img.nii.gz").array, image)
    np.testing.assert_array_equal(load_nifti(tmp_path / "lab.nii.gz", "label").array, labels)
    np.testing.assert_array_equal(load_nifti(tmp_path / "mask.nii.gz", "mask").array, mask)
    np.testing.assert_array_equal(load_nifti(tmp_path / "img.nii.gz").affine, AFFINE)
    # atomic: no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "img.nii.gz",
        "lab.nii.gz",
        "mask.nii.gz",
        "small.nii.gz",
    ]


def test_trailing_singleton_dimension_is_squeezed(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    vol = load_nifti(_write(tmp_path / "x.nii.gz", arr))
    assert vol.shape == (2, 3, 4)
    assert read_header(tmp_path / "x.nii.gz")[0] == (2, 3, 4)


def _expect(path: Path, kind: str, phrase: str) -> None:
    with pytest.raises(DataError) as info:
        load_nifti(path, kind)  # type: ignore[arg-type]
    assert info.value.path == path
    assert phrase in info.value.problem
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.nii.gz", "image", "file not found")


def test_truncated_gzip(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.nii.gz", np.random.default_rng(1).random((20, 20, 20)).astype(np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect(path, "image", "truncated or corrupt voxel data")
    path.write_bytes(data[:100])  # cut inside the header
    _expect(path, "image", "unreadable or corrupt NIfTI")


def test_truncated_uncompressed(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.nii", np.ones((10, 10, 10), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-1000])
    _expect(path, "image", "truncated or corrupt voxel data")


def test_random_bytes(tmp_path: Path) -> None:
    raw = np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (tmp_path / "r.nii.gz").write_bytes(raw)
    _expect(tmp_path / "r.nii.gz", "image", "unreadable or corrupt NIfTI")
    (tmp_path / "g.nii.gz").write_bytes(gzip.compress(raw))  # valid gzip, garbage inside
    _expect(tmp_path / "g.nii.gz", "image", "unreadable or corrupt NIfTI")
    (tmp_path / "e.nii.gz").write_bytes(b"")
    _expect(tmp_path / "e.nii.gz", "label", "unreadable or corrupt NIfTI")


def test_4d_and_2d(tmp_path: Path) -> None:
    _expect(_write(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 2), np.float32)), "image", "not a 3D volume")
    _expect(_write(tmp_path / "2d.nii.gz", np.zeros((4, 4), np.float32)), "image", "not a 3D volume")


def test_nan_and_inf(tmp_path: Path) -> None:
    arr = np.ones((4, 4, 4), np.float32)
    arr[1, 1, 1] = np.nan
    _expect(_write(tmp_path / "nan.nii.gz", arr), "image", "NaN or Inf")
    arr[1, 1, 1] = np.inf
    _expect(_write(tmp_path / "inf.nii.gz", arr), "label", "NaN or Inf")


def test_non_integer_labels(tmp_path: Path) -> None:
    arr = np.zeros((4, 4, 4), np.float32)
    arr[0, 0, 0] = 1.5
    _expect(_write(tmp_path / "lab.nii.gz", arr), "label", "non-integer")
    arr[0, 0, 0] = 3.0  # integral floats are fine
    assert load_nifti(_write(tmp_path / "ok.nii.gz", arr), "label").array.max() == 3


def test_empty_mask(tmp_path: Path) -> None:
    _expect(_write(tmp_path / "m.nii.gz", np.zeros((4, 4, 4), np.uint8)), "mask", "empty mask")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "dir.nii.gz"
    os.mkdir(folder)
    _expect(folder, "image", "not a file")
