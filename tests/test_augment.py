"""Spatial augmentation (random affine) of victim batches: geometry, alignment, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_invert.config import SegmenterConfig, TrainConfig, load_config
from napari_invert.errors import ConfigError
from napari_invert.models import build_segmenter, train_segmenter
from napari_invert.models.augment import (
    affine_matrices,
    augment_batch,
    augment_intensity,
    random_affine,
    random_flips,
)

CPU = torch.device("cpu")


def ellipsoids(
    n: int, size: int = 20, seed: int = 0, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, size, size, size)`` images (core 0.9, shell 0.4) and their class indices 0..2."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))
    images, labels = [], []
    for _ in range(n):
        centre = scale * rng.uniform(-0.2, 0.2, 3).astype(np.float32)[:, None, None, None]
        radii = scale * rng.uniform(0.4, 0.6, 3).astype(np.float32)[:, None, None, None]
        r = np.sqrt((((grid - centre) / radii) ** 2).sum(0))
        lab = np.where(r < 0.55, 2, np.where(r < 1.0, 1, 0)).astype(np.int64)
        images.append(np.select([lab == 2, lab == 1], [0.9, 0.4], 0.0).astype(np.float32))
        labels.append(lab)
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))[:, None]


def centre_of_mass(volume: torch.Tensor) -> np.ndarray:
    """Centre of mass of a ``(X, Y, Z)`` non-negative volume, in voxel indices."""
    v = volume.double()
    idx = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in v.shape], indexing="ij")
    return np.array([float((v * i).sum() / v.sum()) for i in idx])


def test_each_output_voxel_shows_the_input_voxel_its_matrix_names() -> None:
    """Known answer: resample images that hold their own voxel coordinates. Linear
    interpolation reproduces a linear function exactly, so every interior output voxel
    ``v`` must read ``A (v - c) + c + t``."""
    sizes = (20, 24, 16)
    axes = [torch.arange(n, dtype=torch.float32) for n in sizes]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))[:, None]  # (3, 1, X, Y, Z)
    seed = [4, 0, 11]
    out, _ = random_affine(coords, None, np.random.default_rng(seed), 15.0, 0.1, 3.0)
    matrices = affine_matrices(np.random.default_rng(seed), 3, 15.0, 0.1, 3.0)
    centre = (np.array(sizes) - 1) / 2
    checked = 0
    for v in [(10, 12, 8), (6, 9, 7), (13, 15, 9), (9, 11, 5)]:
        for axis in range(3):
            m = matrices[axis]
            source = m[:3, :3] @ (np.array(v) - centre) + centre + m[:3, 3]
            if np.all(source >= 0) and np.all(source <= np.array(sizes) - 1):
                assert float(out[axis, 0][v]) == pytest.approx(source[axis], abs=1e-3)
                checked += 1
    assert checked >= 10


def test_a_pure_shift_moves_labels_by_the_drawn_voxels() -> None:
    x, y = ellipsoids(3, seed=1, scale=0.6)  # well inside the volume: nothing leaves it
    seed = [4, 0, 11]
    _, out_y = random_affine(x, y, np.random.default_rng(seed), 0.0, 0.0, 3.0)
    shifts = affine_matrices(np.random.default_rng(seed), 3, 0.0, 0.0, 3.0)[:, :3, 3]
    assert np.abs(shifts).max() > 1.0  # a real move
    for i in range(3):
        # the resampling pulls: output voxel v shows input voxel v + shift
        expected = centre_of_mass(y[i, 0] > 0) - shifts[i]
        assert np.allclose(centre_of_mass(out_y[i, 0] > 0), expected, atol=0.5)


def test_rotation_and_scaling_keep_labels_on_their_structures() -> None:
    x, y = ellipsoids(4, seed=2)
    out_x, out_y = random_affine(x, y, np.random.default_rng(0), 20.0, 0.15, 2.0)
    assert out_y.dtype == y.dtype and out_x.dtype == x.dtype and out_x.shape == x.shape
    assert set(out_y.unique().tolist()) <= {0, 1, 2}  # nearest neighbour: no new classes
    for i in range(4):
        assert not torch.equal(out_y[i], y[i])  # every sample moved
        # the core class still sits on the bright voxels, the brain on the non-zero ones
        assert ((out_x[i] > 0.65) == (out_y[i] == 2)).float().mean() > 0.98
        assert ((out_x[i] > 0.2) == (out_y[i] > 0)).float().mean() > 0.98
    # the same generator state gives the same batch
    again_x, again_y = random_affine(x, y, np.random.default_rng(0), 20.0, 0.15, 2.0)
    assert torch.equal(again_x, out_x) and torch.equal(again_y, out_y)


def test_matrices_stay_within_the_configured_ranges() -> None:
    m = affine_matrices(np.random.default_rng(3), 50, 10.0, 0.0, 0.0)
    rot = m[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-12)  # scale 0: pure rotation
    assert np.allclose(np.linalg.det(rot), 1.0)
    angle = np.degrees(np.arccos(np.clip((np.trace(rot, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() <= np.sqrt(3) * 10.0 + 1e-9 and angle.max() > 5.0
    s = affine_matrices(np.random.default_rng(3), 50, 0.0, 0.1, 0.0)[:, :3, :3]
    diag = np.diagonal(s, axis1=1, axis2=2)
    assert np.allclose(s, np.apply_along_axis(np.diag, 1, diag))
    assert diag.min() >= 0.9 and diag.max() <= 1.1 and diag.max() - diag.min() > 0.1


def test_without_affine_ranges_the_batch_is_augmented_exactly_as_before() -> None:
    """Studies made before the affine option existed replay bit-identically."""
    x, y = ellipsoids(2, seed=3)
    config = TrainConfig(flip_axes=[0, 2])
    rng_new, rng_old = np.random.default_rng([0, 5, 11]), np.random.default_rng([0, 5, 11])
    torch.manual_seed(7)  # the intensity noise comes from torch's generator
    new_x, new_y = augment_batch(x, y, config, rng_new)
    torch.manual_seed(7)
    old_x, old_y = random_flips([x, y], [0, 2], rng_old)
    old_x = augment_intensity(old_x, rng_old)
    assert torch.equal(new_x, old_x) and torch.equal(new_y, old_y)
    untouched_x, untouched_y = random_affine(x, y, rng_new, 0.0, 0.0, 0.0)
    assert untouched_x is x and untouched_y is y


def test_training_with_affine_augmentation_is_deterministic() -> None:
    x, y = ellipsoids(4, size=16, seed=4)
    images, labels = list(x[:, 0].numpy()), list(y[:, 0].numpy())
    cfg = TrainConfig(
        steps=3,
        batch_size=2,
        lr=0.01,
        rotate_deg=10,
        scale_fraction=0.1,
        shift_voxels=2,
        validation_fraction=0,
    )
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_segmenter("segnet", SegmenterConfig(base_filters=4, levels=2), n_classes=3)
        losses.append([r["loss"] for r in train_segmenter(model, images, labels, cfg, CPU, progress=False)])
    assert losses[0] == losses[1]
    torch.manual_seed(0)
    plain = build_segmenter("segnet", SegmenterConfig(base_filters=4, levels=2), n_classes=3)
    no_affine = cfg.model_copy(update={"rotate_deg": 0.0, "scale_fraction": 0.0, "shift_voxels": 0.0})
    assert [
        r["loss"] for r in train_segmenter(plain, images, labels, no_affine, CPU, progress=False)
    ] != losses[0]


def test_an_out_of_range_rotation_names_the_file_and_key(tmp_path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("segmenter_training:\n  rotate_deg: 90\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "rotate_deg" in message
