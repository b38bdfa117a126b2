"""The embedded demo cohort: real files in a temporary folder, small and fast (4 mm)."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from scipy import ndimage as ndi

from napari_invert.data.demo import (
    DEMO_LABEL_NAMES,
    demo_grid,
    demo_subject,
    demo_subject_ids,
    make_demo_cohort,
)
from napari_invert.errors import ConfigError, DataError

VOXEL = 4.0
N = 4


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "cohort"
    assert make_demo_cohort(out, n_subjects=N, seed=0, voxel_mm=VOXEL, progress=False) == out
    return out


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine, img.get_data_dtype()


@pytest.fixture(scope="module")
def volumes(cohort_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for sid in demo_subject_ids(N):
        out[sid] = {
            kind: _load(cohort_dir / kind / f"{sid}.nii.gz")[0] for kind in ("images", "masks", "labels")
        }
    return out


def test_grid_known_answers() -> None:
    shape, affine = demo_grid(3.0)
    assert shape == (64, 80, 64)
    assert demo_grid(2.0)[0] == (96, 120, 96)
    assert demo_grid(4.0)[0] == (48, 60, 48)
    np.testing.assert_allclose(np.diag(affine), [3.0, 3.0, 3.0, 1.0])
    # the grid is centred on (0, -12, 18) mm
    centre = affine @ np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2, 1])
    np.testing.assert_allclose(centre[:3], [0.0, -12.0, 18.0])
    assert demo_subject_ids(3) == ["D01", "D02", "D03"]
    assert demo_subject_ids(120)[0] == "D001"


def test_files_shapes_affines(cohort_dir: Path) -> None:
    shape, affine = demo_grid(VOXEL)
    ids = demo_subject_ids(N)
    assert ids == ["D01", "D02", "D03", "D04"]
    for sid in ids:
        for kind, dtype in (("images", np.float32), ("masks", np.uint8), ("labels", np.uint8)):
            path = cohort_dir / kind / f"{sid}.nii.gz"
            arr, aff, disk_dtype = _load(path)
            assert arr.shape == shape, path
            assert disk_dtype == dtype, path
            np.testing.assert_allclose(aff, affine)
            assert nib.aff2axcodes(aff) == ("R", "A", "S")
    assert sorted(p.name for p in (cohort_dir / "images").iterdir()) == [f"{sid}.nii.gz" for sid in ids]
    assert not list(cohort_dir.rglob(".*"))  # no temporary files left behind

    with (cohort_dir / "demographics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["ID"] for r in rows] == ids
    assert all(20 <= int(r["Age"]) <= 85 and r["Sex"] in ("F", "M") for r in rows)
    assert [(s.age, s.sex) for s in (demo_subject(i, voxel_mm=VOXEL) for i in range(N))] == [
        (int(r["Age"]), r["Sex"]) for r in rows
    ]

    meta = yaml.safe_load((cohort_dir / "cohort.yaml").read_text())
    assert meta["name"] == "demo"
    assert meta["skull_stripped"] is False
    assert meta["label_names"] == DEMO_LABEL_NAMES
    gen = meta["generator"]
    assert (gen["n_subjects"], gen["seed"], gen["voxel_mm"]) == (N, 0, VOXEL)
    assert gen["shape"] == list(shape)
    assert "synthetic" in gen["note"].lower()


def test_deterministic(volumes: dict[str, dict[str, np.ndarray]], tmp_path: Path) -> None:
    # re-generating a subject in memory gives the very arrays that were written
    again = demo_subject(1, seed=0, voxel_mm=VOXEL)
    assert again.subject_id == "D02"
    assert np.array_equal(again.image, volumes["D02"]["images"])
    assert np.array_equal(again.mask, volumes["D02"]["masks"])
    assert np.array_equal(again.labels, volumes["D02"]["labels"])
    # a smaller cohort with the same seed holds the same first subjects
    small = make_demo_cohort(tmp_path / "small", n_subjects=1, seed=0, voxel_mm=VOXEL, progress=False)
    assert np.array_equal(_load(small / "images" / "D01.nii.gz")[0], volumes["D01"]["images"])
    # another seed gives another subject
    other = demo_subject(1, seed=1, voxel_mm=VOXEL)
    assert not np.array_equal(other.image, again.image)
    assert not np.array_equal(other.labels, again.labels)


def test_labels_inside_mask(volumes: dict[str, dict[str, np.ndarray]]) -> None:
    assert len(DEMO_LABEL_NAMES) >= 8
    for sid, v in volumes.items():
        labels, mask = v["labels"], v["masks"]
        assert set(np.unique(mask).tolist()) == {0, 1}, sid
        present = set(np.unique(labels).tolist()) - {0}
        assert present <= set(DEMO_LABEL_NAMES), sid
        assert len(present) >= 8, (sid, present)
        assert present == set(DEMO_LABEL_NAMES), (sid, set(DEMO_LABEL_NAMES) - present)
        assert not np.any(labels[mask == 0]), sid
        # most of the brain is labelled (unlabelled = CSF and partial volume)
        assert (labels > 0).sum() > 0.8 * mask.sum(), sid
        # left structures left of right ones (RAS: x grows to the right)
        xs = np.broadcast_to(np.arange(labels.shape[0])[:, None, None], labels.shape)
        for left, right in ((1, 2), (9, 10), (11, 12), (13, 14)):
            assert xs[labels == left].mean() < xs[labels == right].mean(), (sid, left, right)


def test_brain_volume_plausible(volumes: dict[str, dict[str, np.ndarray]]) -> None:
    for sid, v in volumes.items():
        litres = v["masks"].sum() * VOXEL**3 / 1e6
        assert 1.4 < litres < 2.4, (sid, litres)  # MNI152 brain ~1.9 l, +-5 % per axis


def test_full_head_has_skull_and_scalp(volumes: dict[str, dict[str, np.ndarray]]) -> None:
    for sid, v in volumes.items():
        image, mask = v["images"], v["masks"].astype(bool)
        assert image.dtype == np.float32
        assert image.min() >= 0.0
        assert 0.6 < np.percentile(image, 99.9) < 1.4, sid  # roughly in [0, 1]
        outside = image[~mask]
        # skull, scalp, face and neck: many bright voxels outside the brain
        assert (outside > 0.2).sum() > 0.3 * mask.sum(), sid
        # a bright scalp (fat) shell exists
        assert (outside > 0.6).sum() > 0.02 * mask.sum(), sid
        # background (corners of the field of view) is dark Rician-like noise
        corner = image[:4, :4, :]
        assert 0.0 < corner.mean() < 0.05, sid
        # the skull-stripped variant is zero outside the mask and unchanged inside
        stripped = image * mask
        assert not np.any(stripped[~mask])
        assert np.array_equal(stripped[mask], image[mask])
        # inside the brain: WM bright, ventricles dark (T1 contrast)
        labels = v["labels"]
        wm = image[(labels == 9) | (labels == 10)].mean()
        gm = image[(labels >= 1) & (labels <= 8)].mean()
        vent = image[(labels == 11) | (labels == 12)].mean()
        assert wm > gm > vent, (sid, wm, gm, vent)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_subjects_differ_realistically(volumes: dict[str, dict[str, np.ndarray]]) -> None:
    ids = list(volumes)
    union = np.any([volumes[s]["masks"] > 0 for s in ids], axis=0)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            r = _corr(volumes[a]["images"][union], volumes[b]["images"][union])
            assert 0.5 < r < 0.99, (a, b, r)
            # the brain masks differ too (size, pose, deformation)
            assert not np.array_equal(volumes[a]["masks"], volumes[b]["masks"])


def test_blurred_copy_still_identifies_its_subject(
    volumes: dict[str, dict[str, np.ndarray]],
) -> None:
    """A mildly blurred image correlates best with its own subject (re-identification is
    possible) but the margin is not trivial (subjects share one template anatomy)."""
    ids = list(volumes)
    union = np.any([volumes[s]["masks"] > 0 for s in ids], axis=0)
    originals = [volumes[s]["images"] * volumes[s]["masks"] for s in ids]
    for i, orig in enumerate(originals):
        blurred = ndi.gaussian_filter(orig, 1.0)[union]
        sims = [_corr(blurred, o[union]) for o in originals]
        assert int(np.argmax(sims)) == i, (ids[i], sims)
        others = max(s for j, s in enumerate(sims) if j != i)
        assert others > 0.5, (ids[i], sims)


def test_second_call_is_a_no_op(cohort_dir: Path) -> None:
    files = sorted(p for p in cohort_dir.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    assert make_demo_cohort(cohort_dir, n_subjects=N, seed=0, voxel_mm=VOXEL, progress=False) == cohort_dir
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in cohort_dir.rglob("*") if p.is_file()) == files


def test_conflicting_settings_raise(cohort_dir: Path) -> None:
    with pytest.raises(DataError, match="different settings") as info:
        make_demo_cohort(cohort_dir, n_subjects=N, seed=1, voxel_mm=VOXEL, progress=False)
    assert info.value.path == cohort_dir
    assert str(cohort_dir) in str(info.value) and "seed" in str(info.value)
    with pytest.raises(DataError, match="voxel_mm"):
        make_demo_cohort(cohort_dir, n_subjects=N, seed=0, voxel_mm=3.0, progress=False)


def test_overwrite_replaces_and_removes_stale_subjects(tmp_path: Path) -> None:
    out = tmp_path / "c"
    make_demo_cohort(out, n_subjects=2, seed=0, voxel_mm=VOXEL, progress=False)
    first = _load(out / "images" / "D01.nii.gz")[0]
    make_demo_cohort(out, n_subjects=1, seed=3, voxel_mm=VOXEL, progress=False, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["D01.nii.gz"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["D01.nii.gz"]
    assert not np.array_equal(_load(out / "images" / "D01.nii.gz")[0], first)
    assert yaml.safe_load((out / "cohort.yaml").read_text())["generator"]["seed"] == 3
    assert (out / "demographics.csv").read_text().count("\n") == 2


def test_refuses_foreign_folders(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty") as info:
        make_demo_cohort(busy, n_subjects=1, voxel_mm=VOXEL, progress=False)
    assert info.value.path == busy
    real = tmp_path / "real"
    real.mkdir()
    (real / "cohort.yaml").write_text("name: mine\nskull_stripped: true\n")
    with pytest.raises(DataError, match="not made by make_demo_cohort"):
        make_demo_cohort(real, n_subjects=1, voxel_mm=VOXEL, progress=False, overwrite=True)
    assert (real / "cohort.yaml").read_text().startswith("name: mine")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        make_demo_cohort(a_file, n_subjects=1, voxel_mm=VOXEL, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"voxel_mm": 0.5}, "voxel_mm"),
        ({"voxel_mm": "big"}, "voxel_mm"),
        ({"n_subjects": 0}, "n_subjects"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make_demo_cohort(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


def test_cohort_reader_reads_both_variants(
    cohort_dir: Path, volumes: dict[str, dict[str, np.ndarray]]
) -> None:
    from napari_invert.data.cohort import Cohort

    cohort = Cohort.from_path(cohort_dir)
    assert cohort.name == "demo"
    assert cohort.subject_ids == demo_subject_ids(N)
    variants = cohort.variants() if callable(cohort.variants) else cohort.variants
    assert list(variants) == ["skull_stripped", "full_head"]
    assert cohort.label_names == DEMO_LABEL_NAMES
    assert cohort.validate() == []
    assert cohort.validate(full=True) == []
    subject = cohort["D03"]
    assert subject.demographics["Sex"] in ("F", "M")
    full = subject.load_variant("full_head").array
    stripped = subject.load_variant("skull_stripped").array
    assert np.array_equal(full, volumes["D03"]["images"])
    assert np.array_equal(stripped, volumes["D03"]["images"] * volumes["D03"]["masks"])
