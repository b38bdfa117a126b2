"""The template anatomy behind the synthetic demo cohort.

:func:`build_atlas` loads nilearn's MNI152 2009 template (T1, grey/white-matter maps),
smooths it for the output voxel size and derives the label map, the brain envelope and
the head surface every demo subject is warped from (cached in memory per voxel size).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from napari_invert.data.demo_labels import make_labels
from napari_invert.data.demo_space import DemoGrid, fov_grid, sample_world


@dataclass(frozen=True)
class Atlas:
    """Template maps: tissue maps on a fine grid, smooth distance maps on a 2 mm grid."""

    tissue: DemoGrid
    t1: np.ndarray  # smooth(T1 * mask), float32
    contrast: np.ndarray  # smooth((WM - GM) * mask), float32
    mask: np.ndarray  # smooth(mask) in [0, 1], float32
    labels: np.ndarray  # uint8, DEMO_LABEL_NAMES values
    shape_grid: DemoGrid
    d_env: np.ndarray  # signed distance (mm) to the smooth brain envelope, + outside
    sdf_head: np.ndarray  # signed distance (mm) to the nominal head surface, + outside
    ventricle_centre: np.ndarray  # (3,) mm
    cord_centre: np.ndarray  # (2,) mm, x and y of the brainstem at the template's bottom
    brain_bottom_mm: float  # lowest z of the template brain


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray, DemoGrid]:
    """MNI152 2009 T1 (scaled 0..1), GM and WM probability maps at 1 mm, from nilearn."""
    from nilearn import datasets  # local import: nilearn is slow to import

    images = [
        datasets.load_mni152_template(resolution=1),
        datasets.load_mni152_gm_template(resolution=1),
        datasets.load_mni152_wm_template(resolution=1),
    ]
    affine = np.asarray(images[0].affine, dtype=np.float64)
    spacing = float(affine[0, 0])
    if not np.allclose(affine[:3, :3], np.eye(3) * spacing) or spacing <= 0:
        raise RuntimeError(f"unexpected MNI152 template affine from nilearn:\n{affine}")
    arrays = [np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32) for img in images]
    for arr in arrays[1:]:
        if arr.max() > 1.5:  # probability maps stored 0..255
            arr /= 255.0
    grid = DemoGrid(arrays[0].shape, tuple(affine[:3, 3]), spacing)  # type: ignore[arg-type]
    return arrays[0], arrays[1], arrays[2], grid


@functools.lru_cache(maxsize=2)
def build_atlas(voxel_mm: float) -> Atlas:
    """Resample the template for output voxels of ``voxel_mm`` and derive labels/shells."""
    t1, gm, wm, src = load_template()
    mask = t1 > 0.2  # nilearn's own brain-mask rule (holes filled below)
    # crop to the brain plus a margin (the template's grid has much empty space)
    nz = np.nonzero(mask)
    lo = [max(int(a.min()) - 8, 0) for a in nz]
    hi = [min(int(a.max()) + 9, n) for a, n in zip(nz, mask.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    t1, gm, wm, mask = t1[box], gm[box], wm[box], ndi.binary_fill_holes(mask[box])
    origin = tuple(o + src.spacing * a for o, a in zip(src.origin, lo))
    src = DemoGrid(mask.shape, origin, src.spacing)  # type: ignore[arg-type]
    maskf = mask.astype(np.float32)

    # anti-alias for the output voxel size; keep every k-th voxel (1 or 2 mm tissue grid)
    step = 2 if voxel_mm >= 4.0 else 1
    sigma = 0.4 * voxel_mm / src.spacing
    sub = (slice(None, None, step),) * 3
    tissue = DemoGrid(mask[sub].shape, src.origin, src.spacing * step)  # type: ignore[arg-type]

    def smooth(vol: np.ndarray) -> np.ndarray:
        out = ndi.gaussian_filter(vol, sigma, truncate=3.0)[sub]
        return np.ascontiguousarray(out, dtype=np.float32)

    t1_s = smooth(t1 * maskf)
    con_s = smooth((wm - gm) * maskf)
    mask_s = np.clip(smooth(maskf), 0.0, 1.0)
    gm_t, wm_t, t1_t, mask_t = gm[sub], wm[sub], t1[sub], mask[sub]

    # smooth brain envelope and distance maps on a coarse (2 mm) grid with margin
    sgrid = fov_grid(2.0, margin_mm=16.0)
    sx, sy, sz = sgrid.mesh()
    scoords = np.stack(np.broadcast_arrays(sx, sy, sz)).astype(np.float32)
    env = ndi.gaussian_filter(sample_world(mask_s, tissue, scoords, order=1), 2.0) > 0.5
    env = ndi.binary_fill_holes(env)
    d_env = signed_distance(env, sgrid.spacing)

    brain_bottom = float(src.origin[2] + src.spacing * np.nonzero(mask.any(axis=(0, 1)))[0][0])
    face = (sx / 62.0) ** 2 + ((sy - 38.0) / 60.0) ** 2 + ((sz + 40.0) / 46.0) ** 2 < 1.0
    neck = (sz < -40.0) & ((sx / 58.0) ** 2 + ((sy + 22.0) / 66.0) ** 2 < 1.0)
    head = (d_env < 14.0) | face | neck
    head = ndi.gaussian_filter(head.astype(np.float32), 2.5) > 0.5
    sdf_head = signed_distance(head, sgrid.spacing)

    # depth below the brain envelope, on the tissue grid
    tcoords = np.stack(np.broadcast_arrays(*tissue.mesh())).astype(np.float32)
    depth = -sample_world(d_env, sgrid, tcoords, order=1, mode="nearest")
    del tcoords
    labels = make_labels(t1_t, gm_t, wm_t, mask_t, depth, tissue)

    vent = np.argwhere((labels == 11) | (labels == 12))
    vent_centre = np.asarray(tissue.origin) + tissue.spacing * vent.mean(axis=0)
    bottom_slice = mask[:, :, np.nonzero(mask.any(axis=(0, 1)))[0][0] + 1]
    cord_idx = np.argwhere(bottom_slice).mean(axis=0)
    cord_centre = np.asarray(src.origin[:2]) + src.spacing * cord_idx

    arrays = (t1_s, con_s, mask_s, labels, d_env, sdf_head)
    for arr in arrays:
        arr.setflags(write=False)
    return Atlas(
        tissue=tissue,
        t1=t1_s,
        contrast=con_s,
        mask=mask_s,
        labels=labels,
        shape_grid=sgrid,
        d_env=d_env,
        sdf_head=sdf_head,
        ventricle_centre=vent_centre.astype(np.float32),
        cord_centre=cord_centre.astype(np.float32),
        brain_bottom_mm=brain_bottom,
    )


def signed_distance(inside: np.ndarray, spacing: float) -> np.ndarray:
    """Signed Euclidean distance (mm) to the boundary of ``inside``: negative inside."""
    out = ndi.distance_transform_edt(~inside, sampling=spacing)
    inn = ndi.distance_transform_edt(inside, sampling=spacing)
    return np.ascontiguousarray(out - inn, dtype=np.float32)
