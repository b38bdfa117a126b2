"""A "new cohort" made from LPBA40, to check that the default settings transfer.

:func:`build_transfer_cohort` writes a generic ``folder`` cohort (``images/``,
``labels/``, ``cohort.yaml``) that differs from LPBA40 in everything a user's own
skull-stripped T1 cohort would:

* **label set**: the 56 LPBA40 structures are merged pairwise (consecutive label values,
  i.e. left + right of one structure) into 28 labels with new values ``100, 103, 106, ...``;
* **orientation**: voxel axes permuted (x <-> y) and the first stored axis flipped, with
  the affine changed to match (the anatomy in world space is unchanged, so a pipeline
  that honours the header sees the same brains, but no array is laid out like LPBA40's);
* **intensities**: scaled to a scanner-like range (0..~2500 with a per-subject gain
  U(0.8, 1.25)) and stored as int16;
* **position** (optional, ``shift_mm``): each subject's volume is moved by a random whole
  number of voxels (up to ``shift_mm`` per axis), as in a cohort that is not
  co-registered; LPBA40 itself is affinely aligned, which makes the majority-label
  "atlas" baseline unusually strong;
* **voxel size**: optionally block-averaged (images) / mode-free nearest subsampled
  (labels) by an integer factor to keep tests small.

Used by ``tests/test_convergence.py`` (tiny version) and ``scripts/transfer_study.py``
(the 4 mm quick_cpu-sized run whose figures are reported).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["build_transfer_cohort", "merged_label_values"]


def merged_label_values(values: np.ndarray) -> dict[int, int]:
    """Map LPBA40 label values (sorted, background excluded) to the merged new values:
    values ``v_0 < v_1 < ...`` go to ``100 + 3 * (rank // 2)``."""
    vals = sorted(int(v) for v in np.unique(values) if v != 0)
    return {v: 100 + 3 * (i // 2) for i, v in enumerate(vals)}


def _reorient(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute axes (0, 1) and flip the new axis 0; return the array and matching affine.

    New index ``(i, j, k)`` holds old voxel ``(j, n0 - 1 - i, k)`` where ``n0`` is the new
    axis-0 length (= old axis 1 length). The affine maps new indices to the same world
    points as the old ones did.
    """
    out = np.flip(np.transpose(array, (1, 0, 2)), axis=0).copy()
    n0 = out.shape[0]
    # old index as a function of the new one: old = M @ new + t
    m = np.zeros((4, 4))
    m[0, 1] = 1.0  # old i = new j
    m[1, 0] = -1.0  # old j = n0 - 1 - new i
    m[1, 3] = n0 - 1
    m[2, 2] = 1.0
    m[3, 3] = 1.0
    return out, affine @ m


def build_transfer_cohort(
    out_dir: str | Path,
    source: str | Path,
    n_subjects: int = 20,
    downsample: int = 1,
    seed: int = 0,
    shift_mm: float = 0.0,
) -> Path:
    """Write the transformed cohort of the first ``n_subjects`` LPBA40 subjects.

    Parameters
    ----------
    out_dir
        Folder to create (``images/``, ``labels/``, ``cohort.yaml``).
    source
        The LPBA40 folder (``images/S01.nii.gz``, ``labels/S01.nii.gz``, ...).
    downsample
        Integer factor: images are block-averaged, labels subsampled (every ``f``-th voxel),
        voxel size multiplied by ``f`` in the affine.
    seed
        Seed of the per-subject intensity gains and shifts.
    shift_mm
        Largest random per-axis displacement of a subject's content (whole voxels, the
        content is rolled; LPBA40's background margin absorbs it). 0: co-registered.

    Returns the cohort folder.
    """
    import nibabel as nib
    import yaml

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    source = Path(source)
    ids = sorted(p.name.split(".")[0] for p in (source / "images").glob("*.nii*"))[:n_subjects]
    if len(ids) < n_subjects:
        raise FileNotFoundError(f"{source}: found {len(ids)} subjects, need {n_subjects}")
    rng = np.random.default_rng(seed)
    mapping: dict[int, int] | None = None
    f = int(downsample)
    for k, sid in enumerate(ids):
        img_nii = nib.load(str(source / "images" / f"{sid}.nii.gz"))
        lab_nii = nib.load(str(source / "labels" / f"{sid}.nii.gz"))
        image = np.asarray(img_nii.get_fdata(), dtype=np.float32)
        labels = np.asarray(lab_nii.dataobj).astype(np.int32)
        affine = img_nii.affine.copy()
        if f > 1:
            shape = [s // f * f for s in image.shape]
            image = image[: shape[0], : shape[1], : shape[2]]
            image = image.reshape(shape[0] // f, f, shape[1] // f, f, shape[2] // f, f).mean(axis=(1, 3, 5))
            labels = labels[f // 2 : shape[0] : f, f // 2 : shape[1] : f, f // 2 : shape[2] : f]
            scale = np.diag([f, f, f, 1.0])
            shift = np.eye(4)
            shift[:3, 3] = (f - 1) / 2.0
            affine = affine @ shift @ scale
        if mapping is None:
            mapping = merged_label_values(labels)
        lut = np.zeros(int(labels.max()) + 1, dtype=np.int16)
        for old, new in mapping.items():
            if old < lut.size:
                lut[old] = new
        new_labels = lut[labels]
        gain = rng.uniform(0.8, 1.25)
        max_shift = round(shift_mm / max(1, f))  # LPBA40 voxels are 1 mm
        offset = tuple(int(v) for v in rng.integers(-max_shift, max_shift + 1, 3))
        if max_shift:
            image = np.roll(image, offset, axis=(0, 1, 2))
            new_labels = np.roll(new_labels, offset, axis=(0, 1, 2))
        new_image = np.round(image * 2500.0 * gain).astype(np.int16)
        new_image, new_affine = _reorient(new_image, affine)
        new_labels, _ = _reorient(new_labels, affine)
        name = f"sub-{k + 1:03d}"
        nib.save(nib.Nifti1Image(new_image, new_affine), str(out / "images" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(new_labels, new_affine), str(out / "labels" / f"{name}.nii.gz"))
    assert mapping is not None
    names = {new: f"merged_{old}" for old, new in sorted(mapping.items(), reverse=True)}
    (out / "cohort.yaml").write_text(
        yaml.safe_dump(
            {"name": "lpba40_transfer", "skull_stripped": True, "label_names": dict(sorted(names.items()))},
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    return out
