"""One synthetic subject of the demo cohort, made in memory.

:func:`demo_subject` warps the template anatomy (:mod:`napari_invert.data.demo_template`)
by a random affine and smooth deformation and gives it its own contrast, bias field,
texture, ventricle size, skull/scalp and noise; the result is a :class:`DemoSubject`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_invert.data.demo_space import (
    DEMO_FOV_CENTRE_MM,
    DemoGrid,
    check_int,
    check_voxel_mm,
    fov_grid,
    sample_world,
)
from napari_invert.data.demo_template import build_atlas

#: Width (mm) of the Gaussian region around the ventricles that is expanded/shrunk.
_VENTRICLE_SIGMA_MM = 22.0


@dataclass(frozen=True)
class DemoSubject:
    """One synthetic subject on the demo grid.

    Attributes
    ----------
    subject_id
        ``D01``, ``D02``, ...
    image
        ``(X, Y, Z)`` float32 full-head T1-like image, roughly in [0, 1]; background is
        Rician-like noise near 0.
    mask
        ``(X, Y, Z)`` uint8 brain mask (0/1).
    labels
        ``(X, Y, Z)`` uint8 label map, values of :data:`DEMO_LABEL_NAMES`, zero outside
        ``mask``.
    affine
        4x4 RAS+ voxel-to-world affine in mm (isotropic ``voxel_mm``).
    age, sex
        Synthetic demographics (years, ``"F"``/``"M"``) that also steer anatomy (older:
        larger ventricles and CSF gap; male: slightly larger head).
    """

    subject_id: str
    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    age: int
    sex: str


def demo_subject_ids(n_subjects: int) -> list[str]:
    """``["D01", ..., "D40"]`` (zero-padded to at least two digits)."""
    width = max(2, len(str(n_subjects)))
    return [f"D{i + 1:0{width}d}" for i in range(n_subjects)]


def _rbf_basis(axis_mm: np.ndarray, spacing: float) -> np.ndarray:
    """Gaussian bumps every ``spacing`` mm along one axis: ``(len(axis), n_bumps)``."""
    lo = float(axis_mm[0]) - spacing
    n = math.ceil((float(axis_mm[-1]) + spacing - lo) / spacing) + 1
    centres = lo + spacing * np.arange(n)
    return np.exp(-0.5 * ((axis_mm[:, None] - centres[None, :]) / (0.7 * spacing)) ** 2)


def _smooth_fields(rng: np.random.Generator, grid: DemoGrid, spacing: float, n_fields: int) -> np.ndarray:
    """``(n_fields, X, Y, Z)`` float32 smooth random fields (zero mean, unit std).

    Random coefficients on a lattice of Gaussian bumps ``spacing`` mm apart, summed
    separably (fast: no full-resolution filtering).
    """
    bx, by, bz = (_rbf_basis(a, spacing) for a in grid.axes())
    coef = rng.standard_normal((n_fields, bx.shape[1], by.shape[1], bz.shape[1]))
    # plain einsum (no BLAS threads: this runs on shared CPUs next to other work)
    f = np.einsum("zc,nabc->nabz", bz, coef)
    f = np.einsum("yb,nabz->nayz", by, f)
    f = np.einsum("xa,nayz->nxyz", bx, f)
    f -= f.mean(axis=(1, 2, 3), keepdims=True)
    f /= f.std(axis=(1, 2, 3), keepdims=True) + 1e-12
    return f.astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Fine random texture: white noise smoothed by ``sigma_vox`` voxels, unit std."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    tex = ndi.gaussian_filter(noise, sigma_vox, truncate=3.0)
    tex /= tex.std() + 1e-12
    return tex


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 around ``x = 0`` over ``width`` (partial-volume edges)."""
    return np.clip(0.5 + x / width, 0.0, 1.0)


def demo_subject(
    index: int, seed: int = 0, voxel_mm: float = 3.0, n_subjects: int | None = None
) -> DemoSubject:
    """Synthesise subject number ``index`` (0-based) of the demo cohort in memory.

    Subject ``index`` depends only on ``(index, seed, voxel_mm)``, so the first subjects of
    a 4-subject cohort equal those of a 40-subject cohort with the same seed.
    ``n_subjects`` only sets the zero-padding of the ID.

    What varies per subject: head size (sd 1.5 % per subject plus 1 % per axis, within
    +-5 %; males 3 % larger), rotation (sd 1.5 deg, within +-4 deg), translation (sd 1 mm,
    within +-3 mm), a smooth deformation (1.75 mm sd at 50 mm scale plus 0.8 mm sd at
    18 mm scale), ventricle size (grows with age), T1 gamma, grey/white contrast and gain,
    a 3 mm-scale tissue texture, a multiplicative bias field, CSF-gap / skull / scalp-fat
    thickness (with smooth local variation), marrow/fat/muscle intensities and Rician-like
    noise level.
    """
    voxel_mm = check_voxel_mm(voxel_mm)
    index, seed = check_int(index, "index", 0), check_int(seed, "seed", 0)
    atlas = build_atlas(voxel_mm)
    grid = fov_grid(voxel_mm)
    rng = np.random.default_rng([int(seed), int(index)])
    ids = demo_subject_ids(max(n_subjects or 0, index + 1))

    # demographics and scalar parameters (drawn first, in a fixed order)
    age = int(rng.integers(20, 86))
    sex = "M" if rng.random() < 0.5 else "F"
    size = math.exp(rng.normal(0.0, 0.015)) * (1.015 if sex == "M" else 0.985)
    scales = np.clip(size * np.exp(rng.normal(0.0, 0.01, 3)), 0.95, 1.05)
    angles = np.deg2rad(np.clip(rng.normal(0.0, 1.5, 3), -4.0, 4.0))
    shift = np.clip(rng.normal(0.0, 1.0, 3), -3.0, 3.0)
    vent_scale = float(np.clip(0.8 + 0.015 * (age - 20) + rng.normal(0.0, 0.12), 0.7, 1.9))
    gamma = float(np.clip(math.exp(rng.normal(0.0, 0.1)), 0.8, 1.25))
    kappa = rng.uniform(-0.06, 0.06)
    gain = rng.uniform(0.85, 1.0)
    tex_amp = rng.uniform(0.03, 0.06)
    bias_amp = rng.uniform(0.05, 0.12)
    noise_sigma = rng.uniform(0.008, 0.02)
    t_csf = 1.5 + 0.03 * (age - 20) + rng.uniform(0.0, 1.0)
    t_skull = rng.uniform(5.0, 8.0)
    t_fat = rng.uniform(2.0, 6.0)
    head_delta = rng.normal(0.0, 2.0)
    marrow = rng.uniform(0.35, 0.6)
    fat = rng.uniform(0.75, 0.92)
    muscle = rng.uniform(0.28, 0.4)

    # smooth fields on the output grid
    disp = 1.75 * _smooth_fields(rng, grid, 50.0, 3) + 0.8 * _smooth_fields(rng, grid, 18.0, 3)
    local = _smooth_fields(rng, grid, 30.0, 4)
    bias = np.exp(bias_amp * _smooth_fields(rng, grid, 80.0, 1)[0])
    tex_brain = _texture(rng, grid.shape, max(3.0 / voxel_mm, 0.6))
    tex_soft = _texture(rng, grid.shape, max(2.0 / voxel_mm, 0.6))

    # sampling map: output world mm -> template (MNI) mm
    a_inv = np.linalg.inv(_rotation(angles) @ np.diag(scales))
    centre = np.asarray(DEMO_FOV_CENTRE_MM) - np.array([0.0, 0.0, 18.0])  # rotate about MNI ~0
    xyz = grid.mesh()
    coords = np.empty((3, *grid.shape), dtype=np.float32)
    for i in range(3):
        acc = np.zeros(grid.shape, dtype=np.float64)
        for j in range(3):
            acc = acc + a_inv[i, j] * (xyz[j] - centre[j] - shift[j])
        coords[i] = acc + centre[i] + disp[i]
    del disp
    # ventricle expansion/shrinkage around their centre (smooth, invertible)
    vc = atlas.ventricle_centre[:, None, None, None]
    rel = coords - vc
    w = np.exp(-np.sum(rel * rel, axis=0) / (2.0 * _VENTRICLE_SIGMA_MM**2))
    coords = vc + rel * (1.0 + (1.0 / vent_scale - 1.0) * w)[None]
    del rel, w

    # template maps in subject space
    m = np.clip(sample_world(atlas.mask, atlas.tissue, coords, order=1), 0.0, 1.0)
    safe = np.maximum(m, 0.05)
    t1 = np.clip(sample_world(atlas.t1, atlas.tissue, coords, order=1) / safe, 0.0, 1.0)
    con = sample_world(atlas.contrast, atlas.tissue, coords, order=1) / safe
    labels = sample_world(atlas.labels, atlas.tissue, coords, order=0).astype(np.uint8)
    d_env = sample_world(atlas.d_env, atlas.shape_grid, coords, order=1, mode="nearest")
    sdf = sample_world(atlas.sdf_head, atlas.shape_grid, coords, order=1, mode="nearest")

    mask = (m >= 0.5).astype(np.uint8)
    labels[mask == 0] = 0

    # brain intensities
    brain = gain * (t1**gamma + kappa * con) * (1.0 + tex_amp * tex_brain)

    # extra-cerebral tissue, layered by distance to the brain envelope / head surface
    edge = 0.5 * voxel_mm
    tc = t_csf * (1.0 + 0.25 * local[0])
    ts = t_skull * (1.0 + 0.2 * local[1])
    tf = np.maximum(t_fat * (1.0 + 0.3 * local[2]), 1.0)
    depth = np.maximum(head_delta + 2.0 * local[3] - sdf, tc + ts + 3.0 - d_env)
    in_head = _ramp(depth, edge)
    soft = np.where(depth < 1.5, 0.5, np.where(depth < 1.5 + tf, fat, muscle))
    soft = soft * (1.0 + 0.08 * tex_soft)

    cx, cy, cz = coords[0], coords[1], coords[2]
    # orbits: fat pad behind the eye, dark vitreous
    for side in (-1.0, 1.0):
        fat_pad = ((cx - side * 29.0) / 15.0) ** 2 + ((cy - 44.0) / 19.0) ** 2 + ((cz + 37.0) / 13.0) ** 2
        soft = np.where(fat_pad < 1.0, fat, soft)
    eye = np.zeros(grid.shape, dtype=np.float32)
    for side in (-1.0, 1.0):
        r = np.sqrt((cx - side * 32.0) ** 2 + (cy - 58.0) ** 2 + (cz + 37.0) ** 2)
        eye = np.maximum(eye, _ramp(11.5 - r, edge))
    soft = soft * (1.0 - eye) + 0.1 * eye

    # skull: inner table, marrow, outer table; open at the foramen magnum
    r_cord = np.sqrt((cx - atlas.cord_centre[0]) ** 2 + (cy - atlas.cord_centre[1]) ** 2)
    foramen = _ramp(17.0 - r_cord, edge) * _ramp(atlas.brain_bottom_mm + 20.0 - cz, 4.0)
    u = (d_env - tc) / ts
    bone = np.interp(u, [0.0, 0.22, 0.38, 0.62, 0.78, 1.0], [0.04, 0.04, marrow, marrow, 0.04, 0.04]).astype(
        np.float32
    )
    bone = bone * (1.0 + 0.1 * tex_soft)
    in_skull = _ramp(d_env - tc, edge) * _ramp(tc + ts - d_env, edge) * (1.0 - foramen)
    in_skull *= 1.0 - eye
    csf_gap = _ramp(tc - d_env, edge)
    # spinal cord in its CSF sleeve below the template's brain
    below = _ramp(atlas.brain_bottom_mm + 1.0 - cz, edge)
    cord = below * _ramp(6.0 - r_cord, edge)
    sleeve = below * _ramp(9.0 - r_cord, edge)

    outside = soft * (1.0 - in_skull) + bone * in_skull
    outside = outside * (1.0 - csf_gap) + 0.08 * csf_gap
    outside = outside * (1.0 - sleeve) + 0.08 * sleeve
    outside = outside * (1.0 - cord) + 0.62 * cord
    outside = np.maximum(in_head, np.maximum(sleeve, csf_gap)) * outside * gain

    clean = (m * brain + (1.0 - m) * outside) * bias
    noise = rng.standard_normal((2, *grid.shape), dtype=np.float32) * np.float32(noise_sigma)
    image = np.sqrt((clean + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)

    return DemoSubject(
        subject_id=ids[index],
        image=image,
        mask=mask,
        labels=labels,
        affine=grid.affine(),
        age=age,
        sex=sex,
    )
