"""Label tables, cohort layouts (real data and files written here), validation with real
broken files, cohort summaries and prepare_cohort (grid, label modes, cache)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from napari_invert.config import PreprocessConfig
from napari_invert.data.cohort import Cohort
from napari_invert.data.labels import LPBA40_NAMES, LabelTable
from napari_invert.data.prepare import prepare_cohort
from napari_invert.data.summary import cohort_summary, format_cohort_summary
from napari_invert.errors import DataError

# 2 mm voxels, L,P,S orientation (x and y flipped with respect to RAS)
AFFINE = np.array([[-2.0, 0, 0, 24], [0, -2.0, 0, 30], [0, 0, 2.0, -20], [0, 0, 0, 1]])
N = 24


# -- synthetic cohort on disk ---------------------------------------------------------------
def _arrays(scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, mask, labels) of one synthetic subject on a 24^3 grid.

    Brain mask: the box [8, 16)^3; "skull": intensity 40 on the shell [5, 19)^3 outside it.
    Labels: 5 (x < 12) and 9 (x >= 12) in the brain; 13 on x [14, 20), y, z [8, 12)
    (1/3 inside the brain); 77 on [0, 3)^3, entirely outside.
    """
    mask = np.zeros((N, N, N), bool)
    mask[8:16, 8:16, 8:16] = True
    head = np.zeros((N, N, N), bool)
    head[5:19, 5:19, 5:19] = True
    x = np.arange(N)[:, None, None] * np.ones((1, N, N))
    image = np.where(mask, 100.0 + 5 * x, np.where(head, 40.0, 0.0)) * scale
    labels = np.zeros((N, N, N), np.int16)
    labels[mask & (x < 12)] = 5
    labels[mask & (x >= 12)] = 9
    labels[14:20, 8:12, 8:12] = 13
    labels[0:3, 0:3, 0:3] = 77
    return image.astype(np.float32), mask, labels


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def _folder(root: Path, ids: tuple[str, ...] = ("A", "B", "C"), yaml_doc: dict | None = None) -> Path:
    for i, sid in enumerate(ids):
        image, mask, labels = _arrays(1.0 + 0.5 * i)
        _save(root / "images" / f"{sid}.nii.gz", image)
        _save(root / "masks" / f"{sid}.nii.gz", mask)
        _save(root / "labels" / f"{sid}.nii.gz", labels)
    rows = ["ID,Age,Sex"] + [f"{sid},{30 + i},F" for i, sid in enumerate(ids)]
    (root / "demographics.csv").write_text("\n".join(rows) + "\n")
    if yaml_doc is not None:
        (root / "cohort.yaml").write_text(yaml.safe_dump(yaml_doc))
    return root


# -- label tables -------------------------------------------------------------------------
def test_label_table_round_trip() -> None:
    labels = np.array([[[0, 21, 22], [181, 22, 0]]])
    table = LabelTable.from_arrays([labels, np.array([[[166]]])], names=LPBA40_NAMES)
    assert table.values == (21, 22, 166, 181) and table.n_classes == 5
    classes = table.to_contiguous(labels)
    np.testing.assert_array_equal(classes, [[[0, 1, 2], [4, 2, 0]]])
    np.testing.assert_array_equal(table.to_original(classes), labels)
    assert table.class_names[1] == "L superior frontal gyrus" and table.name(0) == "background"
    with pytest.raises(ValueError, match="unknown label values 7"):
        table.to_contiguous(np.array([0, 7, 21]))
    with pytest.raises(ValueError, match=r"0\.\.4"):
        table.to_original(np.array([5]))
    again = LabelTable.from_dict(table.to_dict())
    assert again == table and again.names == table.names
    negative = LabelTable((-3, 4))
    np.testing.assert_array_equal(negative.to_contiguous(np.array([4, 0, -3])), [2, 0, 1])
    assert len(LPBA40_NAMES) == 56


# -- built-in layouts on the real data ------------------------------------------------------
def test_lpba40_layout(lpba40: Path) -> None:
    cohort = Cohort.from_path(lpba40)
    assert cohort.kind == "lpba40" and len(cohort) == 40
    assert cohort.subject_ids[:3] == ["S01", "S02", "S03"]
    assert cohort.variants() == ["skull_stripped"] and cohort.skull_stripped
    two = Cohort.from_path(lpba40, kind="lpba40", n_subjects=2)
    assert two.subject_ids == ["S01", "S02"]
    assert two.validate() == []
    vols = two[1].load()
    assert vols.image.shape == vols.mask.shape == (160, 192, 160)
    np.testing.assert_array_equal(vols.mask.array, vols.image.array > 0)
    assert vols.labels is not None and vols.labels.array.max() == 182
    with pytest.raises(DataError, match="skull-stripped only"):
        two[0].load_variant("full_head")
    with pytest.raises(DataError, match="requested"):
        Cohort.from_path(lpba40, n_subjects=41)


def test_ixi_layout(ixi: Path) -> None:
    cohort = Cohort.from_path(ixi, n_subjects=2)
    assert cohort.kind == "ixi" and cohort.variants() == ["skull_stripped", "full_head"]
    s = cohort[0]
    assert s.subject_id == "IXI012-HH-1211" and s.demographics == {"Age": 38.78, "Sex": "M"}
    full = s.load_variant("full_head")
    stripped = s.load_variant("skull_stripped")
    labels = s.load_labels()
    assert full.shape == (120, 120, 90) and labels is not None
    brain = labels.array > 0
    assert stripped.array[~brain].max() == 0 and full.array[~brain].max() > 100
    np.testing.assert_array_equal(stripped.array[brain], full.array[brain])


def test_summaries_of_the_real_cohorts(lpba40: Path, ixi: Path) -> None:
    lp = cohort_summary(Cohort.from_path(lpba40))
    assert lp["n_subjects"] == 40 and lp["shapes"] == {"160x192x160": 40}
    assert lp["voxel_sizes_mm"] == {"1x1x1": 40} and lp["orientations"] == {"LPS": 40}
    assert lp["n_structures"] == 56 and lp["problems"] == []
    assert lp["variants"] == ["skull_stripped"] and lp["demographics_columns"] == []
    ix = cohort_summary(Cohort.from_path(ixi))
    assert ix["n_subjects"] == 40 and ix["shapes"] == {"120x120x90": 40}
    assert ix["voxel_sizes_mm"] == {"2x2x2": 40} and ix["orientations"] == {"PSR": 40}
    assert ix["n_structures"] == 148 and ix["demographics_columns"] == ["Age", "Sex"]
    text = format_cohort_summary(ix)
    assert "120x120x90 (40)" in text and "148" in text and "full_head" in text


# -- generic layouts ------------------------------------------------------------------------
def test_folder_layout(tmp_path: Path) -> None:
    names = {5: "a", 9: "b", 13: "c", 77: "d"}
    root = _folder(tmp_path / "c", yaml_doc={"name": "toy", "label_names": names})
    cohort = Cohort.from_path(root)
    assert cohort.kind == "folder" and cohort.name == "toy" and cohort.subject_ids == ["A", "B", "C"]
    assert cohort.variants() == ["skull_stripped", "full_head"]  # masks/ -> full-head images
    s = cohort["B"]
    assert s.mask_rule == "file" and s.demographics == {"Age": 31.0, "Sex": "F"}
    assert cohort.validate(full=True) == []
    assert cohort.label_table().values == (5, 9, 13, 77)
    stripped = s.load_variant("skull_stripped").array
    assert stripped.max() > 0 and stripped[0:8].max() == 0
    summary = cohort_summary(cohort, full_check=True)
    assert summary["n_structures"] == 4 and summary["shapes"] == {"24x24x24": 3}


def test_manifests(tmp_path: Path) -> None:
    root = _folder(tmp_path / "c")
    (root / "list.csv").write_text(
        "subject_id,image,label,mask,Age\n"
        "A,images/A.nii.gz,labels/A.nii.gz,masks/A.nii.gz,30\n"
        "B,images/B.nii.gz,labels/B.nii.gz,masks/B.nii.gz,31\n"
    )
    csv_cohort = Cohort.from_path(root / "list.csv")
    assert csv_cohort.kind == "manifest" and csv_cohort.subject_ids == ["A", "B"]
    assert csv_cohort["A"].mask_path == root / "masks" / "A.nii.gz"
    assert csv_cohort["B"].demographics == {"Age": 31.0}
    assert csv_cohort.validate(full=True) == []
    doc = {
        "name": "yaml-toy",
        "skull_stripped": True,
        "subjects": [
            {"subject_id": "A", "image": "images/A.nii.gz", "label": "labels/A.nii.gz"},
            {"subject_id": "C", "image": "images/C.nii.gz"},
        ],
    }
    (root / "list.yaml").write_text(yaml.safe_dump(doc))
    yml = Cohort.from_path(root / "list.yaml")
    assert yml.name == "yaml-toy" and yml["C"].mask_rule == "image>0" and yml.skull_stripped
    problems = yml.validate(full=True)
    assert [(p.path.name, p.problem) for p in problems] == [
        ("C.nii.gz", "no label file (other subjects have one)")
    ]
    with pytest.raises(DataError, match="no label file"):
        yml.validate()


def test_validation_reports_every_broken_file(tmp_path: Path) -> None:
    names = {5: "a", 9: "b", 13: "c", 77: "d"}
    ids = ("A", "B", "C", "D", "E", "F", "G", "H")
    root = _folder(tmp_path / "bad", ids=ids, yaml_doc={"label_names": names})
    _save(root / "labels" / "B.nii.gz", np.zeros((10, 10, 10), np.int16))  # shape mismatch
    moved = AFFINE.copy()
    moved[0, 3] += 5.0
    _save(root / "masks" / "C.nii.gz", _arrays()[1], moved)  # affine mismatch
    _save(root / "masks" / "D.nii.gz", np.zeros((N, N, N), np.uint8))  # empty mask
    lab = _arrays()[2]
    lab[1, 1, 1] = 99
    _save(root / "labels" / "E.nii.gz", lab)  # unknown label value
    img = _arrays()[0]
    img[10, 10, 10] = np.nan
    _save(root / "images" / "F.nii.gz", img)  # NaN ...
    _save(root / "masks" / "F.nii.gz", np.zeros((N, N, N), np.uint8))  # ... and an empty mask
    g = root / "images" / "G.nii.gz"
    g.write_bytes(g.read_bytes()[:-300])  # truncated gzip
    (root / "labels" / "H.nii.gz").unlink()  # missing label file
    _save(root / "labels" / "Z.nii.gz", lab)  # label without an image

    cohort = Cohort.from_path(root)
    problems = cohort.validate(full=True)
    found = {(p.path.relative_to(root).as_posix(), p.problem.split(" (")[0]) for p in problems}
    assert found == {
        ("labels/Z.nii.gz", "label file has no matching image"),
        ("labels/B.nii.gz", "shape 10x10x10 differs from the image's 24x24x24"),
        ("masks/C.nii.gz", "affine differs from the image's"),
        ("masks/D.nii.gz", "empty mask"),
        ("labels/E.nii.gz", "unknown label values 99"),
        ("images/F.nii.gz", "contains NaN or Inf values"),
        ("masks/F.nii.gz", "empty mask"),
        ("images/G.nii.gz", "truncated or corrupt voxel data"),
        ("labels/H.nii.gz", "file not found"),
    }
    with pytest.raises(DataError) as info:  # quick mode: the first problem raises
        cohort.validate()
    assert info.value.path == root / "labels" / "Z.nii.gz"
    # loading a subject raises DataError naming the offending file
    for sid, bad, phrase in [
        ("B", "labels/B.nii.gz", "shape 10x10x10 differs"),
        ("C", "masks/C.nii.gz", "affine differs"),
        ("D", "masks/D.nii.gz", "empty mask"),
        ("H", "labels/H.nii.gz", "file not found"),
    ]:
        with pytest.raises(DataError, match=phrase) as info:
            cohort[sid].load()
        assert info.value.path == root / bad
    # problems only visible in the voxels surface when preparing, naming the file
    (root / "labels" / "Z.nii.gz").unlink()
    for sid in ("B", "C", "D", "G", "H"):
        for sub in ("images", "masks", "labels"):
            (root / sub / f"{sid}.nii.gz").unlink(missing_ok=True)
    with pytest.raises(DataError) as info:  # A, E (unknown label 99), F (NaN)
        prepare_cohort(Cohort.from_path(root), PreprocessConfig(), 8, "skull_stripped", progress=False)
    assert info.value.path == root / "labels" / "E.nii.gz" and "99" in info.value.problem
    for sub in ("images", "masks", "labels"):
        (root / sub / "E.nii.gz").unlink()
    with pytest.raises(DataError) as info:
        prepare_cohort(Cohort.from_path(root), PreprocessConfig(), 8, "skull_stripped", progress=False)
    assert info.value.path == root / "images" / "F.nii.gz"


# -- preparation ----------------------------------------------------------------------------
def test_prepare_grid_label_modes_and_native(tmp_path: Path) -> None:
    root = _folder(tmp_path / "c", yaml_doc={"skull_stripped": True, "mask_rule": "file"})
    cohort = Cohort.from_path(root)
    pre = PreprocessConfig(voxel_mm=None)
    pc = prepare_cohort(cohort, pre, 8, "skull_stripped", progress=False)
    # mask box [8, 16) + 3 voxels margin -> [5, 19): 14 -> 16 voxels, offset 4
    assert pc.shape == (16, 16, 16) and pc.subjects[0].native.offset == (4, 4, 4)
    assert pc.affine_shared and pc.voxel_mm == (2.0, 2.0, 2.0)
    assert nib.aff2axcodes(pc.affine) == ("R", "A", "S")
    s = pc["B"]
    assert s.image.dtype == np.float32 and s.image.min() == 0.0 and s.image.max() == 1.0
    assert s.image[~s.mask].max() == 0.0 and s.mask.sum() == 8**3
    # restrict_to_mask: 77 (outside) goes, 13 keeps its in-brain third
    assert pc.label_table is not None and pc.label_table.values == (5, 9, 13)
    assert pc.label_report["dropped"] == [77]
    assert pc.label_report["fraction_inside_mask"]["13"] == pytest.approx(1 / 3, abs=1e-3)
    assert s.labels is not None and s.labels.dtype == np.int64 and s.labels.max() == 3
    native_labels, native_affine = s.to_native(pc.label_table.to_original(s.labels), order=0)
    _, mask, labels = _arrays()
    np.testing.assert_array_equal(native_affine, AFFINE)
    np.testing.assert_array_equal(native_labels, np.where(mask, labels, 0))
    native_image, _ = s.to_native(s.image)
    assert native_image.shape == (N, N, N) and native_image[~mask].max() == 0
    drop = prepare_cohort(cohort, pre, 8, "skull_stripped", "drop_unseen", progress=False)
    assert drop.label_table.values == (5, 9) and drop.label_report["dropped"] == [13, 77]
    keep = prepare_cohort(cohort, pre, 8, "skull_stripped", "keep", progress=False)
    # 77 is kept by the mode but lies outside the crop window: no class without voxels
    assert keep.label_table.values == (5, 9, 13) and keep.label_report["outside_window"] == [77]
    # keep: all 6x4x4 voxels of 13 per subject, restrict_to_mask: the 2x4x4 in the brain
    assert (keep["A"].labels == 3).sum() == 96 and (pc["A"].labels == 3).sum() == 32


def test_prepare_full_head_nyul_resampling_and_cache(tmp_path: Path) -> None:
    cohort = Cohort.from_path(_folder(tmp_path / "c"))
    pre = PreprocessConfig(voxel_mm=3.0, normalisation="nyul")
    pc = prepare_cohort(cohort, pre, 8, "full_head", cache_dir=tmp_path / "cache", progress=False)
    assert not pc.from_cache and pc.voxel_mm == (3.0, 3.0, 3.0)
    # head box [5, 19) at 2 mm -> about [3, 13) at 3 mm, + 3 voxels margin -> 16 voxels
    assert pc.shape == (16, 16, 16)
    s = pc.subjects[0]
    assert s.image[~s.mask].max() > 0  # the skull is there in the full-head variant
    assert pc.normaliser is not None and pc.normaliser["method"] == "nyul"
    assert len(pc.normaliser["landmarks"]) == 11
    # the three subjects differ only by an intensity scale -> identical standardised images
    np.testing.assert_allclose(pc.subjects[0].image, pc.subjects[2].image, atol=1e-4)
    again = prepare_cohort(cohort, pre, 8, "full_head", cache_dir=tmp_path / "cache", progress=False)
    assert again.from_cache and again.subject_ids == pc.subject_ids
    for a, b in zip(pc.subjects, again.subjects):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.affine, b.affine)
        assert a.native.to_dict() == b.native.to_dict()
    assert again.label_table == pc.label_table and again.shape == pc.shape
    other = prepare_cohort(cohort, pre, 16, "full_head", cache_dir=tmp_path / "cache", progress=False)
    assert not other.from_cache and other.shape == (16, 16, 16)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_prepare_two_lpba40_subjects_at_3mm(lpba40: Path) -> None:
    cohort = Cohort.from_path(lpba40, n_subjects=2)
    pc = prepare_cohort(cohort, PreprocessConfig(voxel_mm=3.0), 16, "skull_stripped", progress=False)
    assert pc.shape == (64, 64, 48) and pc.voxel_mm == (3.0, 3.0, 3.0)  # 40 subjects: 64^3
    assert pc.label_table is not None and 181 not in pc.label_table.values
    assert pc.label_table.n_structures == 55 and pc.n_classes == 56
    back, affine = pc.subjects[0].to_native(pc.subjects[0].image)
    assert back.shape == (160, 192, 160) and nib.aff2axcodes(affine) == ("L", "P", "S")
