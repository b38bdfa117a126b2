"""Report in native space (evaluation.space = native): scores on the source cohort's grid
(known answers, real computation; see ``report_helpers``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from report_helpers import SIM_METRICS, read_csv
from study_fixtures import make_synthetic_study

from napari_invert.report import evaluate_study


# -- issue 13 item 8: evaluation.space = native --------------------------------------------------------
def _native_study(tmp_path: Path) -> tuple[Path, object]:
    """A study whose model grid (2 mm) comes from a real source cohort at 1 mm (LAS, offset origin).

    ``unet bottleneck``: the model-grid reconstruction is the model-grid original, its native
    file the data layer's upsampling of it (as the runner writes it); ``segnet bottleneck``:
    its native file is the native skull-stripped original itself (a perfect native answer).
    """
    from napari_invert.config import PreprocessConfig, dump_config, load_config
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.nifti import save_nifti
    from napari_invert.data.prepare import prepare_cohort
    from napari_invert.study.layout import StudyFolder

    rng = np.random.default_rng(3)
    src = tmp_path / "cohort"
    native_affine = np.array([[-1.0, 0, 0, 20.0], [0, 1.0, 0, -11.0], [0, 0, 1.0, -12.5], [0, 0, 0, 1]])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 24)] * 3, indexing="ij"))
    natives = {}
    for i in range(4):
        sid = f"S{i + 1:02d}"
        mask = np.sum((grid / rng.uniform(0.7, 0.85, 3)[:, None, None, None]) ** 2, axis=0) <= 1
        from scipy import ndimage

        image = 8.0 * ndimage.gaussian_filter(rng.standard_normal((24, 24, 24)), 2.0) + 2.0 * mask
        save_nifti(src / "images" / f"{sid}.nii.gz", image.astype(np.float32), native_affine)
        save_nifti(src / "masks" / f"{sid}.nii.gz", mask.astype(np.uint8), native_affine)
        natives[sid] = (np.where(mask, image, 0).astype(np.float32), mask)
    root = make_synthetic_study(
        tmp_path / "s",
        n_subjects=4,
        shape=(12, 12, 12),
        with_curves=False,
        experiments={("unet", "bottleneck"): (0.0, 0.0), ("segnet", "bottleneck"): (0.0, 0.0)},
    )
    folder = StudyFolder(root)
    pre = PreprocessConfig(voxel_mm=2.0, crop_to_mask=False, normalisation="none", cache=False)
    prepared = prepare_cohort(Cohort.from_path(src, kind="folder"), pre, 4, "skull_stripped", progress=False)
    assert prepared.shape == (12, 12, 12)
    by_id = {s.subject_id: s for s in prepared.subjects}
    splits = folder.read_splits()
    for f in splits["folds"]:
        k = f["fold"]
        prior = np.mean([by_id[s].image for s in f["attack"]], axis=0).astype(np.float32)
        save_nifti(folder.prior("skull_stripped", k), prior, prepared.affine)
        for sid in f["private"]:
            s = by_id[sid]
            for arch in ("unet", "segnet"):
                save_nifti(folder.recon("skull_stripped", k, arch, "bottleneck", sid), s.image, s.affine)
            up, aff = s.to_native(s.image, order=1)
            save_nifti(folder.recon_native("skull_stripped", k, "unet", "bottleneck", sid), up, aff)
            save_nifti(
                folder.recon_native("skull_stripped", k, "segnet", "bottleneck", sid), natives[sid][0], aff
            )
    for s in prepared.subjects:
        save_nifti(folder.original("skull_stripped", s.subject_id), s.image, s.affine)
        save_nifti(folder.mask("skull_stripped", s.subject_id), s.mask.astype(np.uint8), s.affine)
    doc = folder.read_cohort()
    doc.update(root=str(src), kind="folder", affine=np.asarray(prepared.affine).tolist())
    from napari_invert._io import write_json_atomic, write_text_atomic

    write_json_atomic(folder.cohort_path, doc)
    config = load_config(folder.config_path)
    config = config.model_copy(
        update={
            "preprocess": pre,
            "evaluation": config.evaluation.model_copy(update={"space": "native"}),
        }
    )
    write_text_atomic(folder.config_path, dump_config(config))
    return root, natives


def test_native_space_scores_true_pairs_on_the_native_grid(tmp_path: Path) -> None:
    from napari_invert.report.native import NATIVE_CSV_COLUMNS, model_to_native

    root, natives = _native_study(tmp_path)
    summary = evaluate_study(root, metrics=list(SIM_METRICS), progress=False, figures=False)
    native = summary.native
    assert native is not None and "native" not in summary.skipped
    assert native.metrics == ["correlation", "ssim_global", "ssim"]
    assert len(native.rows) == 4 * 2 * 3
    for r in native.rows:
        assert r.native_shape == (24, 24, 24) and r.native_voxel_mm == (1.0, 1.0, 1.0)
        assert r.model_value == pytest.approx(1.0, abs=1e-6)  # perfect on the model grid
        if r.arch == "segnet":  # the native original itself: perfect on the native grid too
            assert r.native_value == pytest.approx(1.0, abs=1e-6), r
        else:  # upsampled 2 mm answer: good but not perfect at 1 mm
            assert 0.0 < r.native_value < 0.99, r
        assert r.native_prior_value < r.native_value
    # the prior is carried onto the native grid through the affines as the data layer does it
    import nibabel as nib

    from napari_invert.study.layout import StudyFolder

    folder = StudyFolder(root)
    sid = "S01"
    fold = summary.experiments[0].row_folds[summary.experiments[0].row_ids.index(sid)]
    model = nib.load(folder.original("skull_stripped", sid))
    up = nib.load(folder.recon_native("skull_stripped", fold, "unet", "bottleneck", sid))
    mine = model_to_native(np.asarray(model.dataobj), model.affine, up.affine, up.shape)
    inside = natives[sid][1]
    np.testing.assert_allclose(mine[inside], np.asarray(up.dataobj)[inside], atol=1e-4)
    # the windowed SSIM (computed on the mask's box) is the whole volume's, and so are the others
    from napari_invert import metrics as M

    native_image = natives[sid][0]
    got = {r.metric: r.native_value for r in native.rows if (r.subject_id, r.arch) == (sid, "unet")}
    L = summary.data_range["skull_stripped"]
    upsampled = np.asarray(up.dataobj)
    assert got["ssim"] == pytest.approx(M.ssim_windowed(upsampled, native_image, L, mask=inside), abs=1e-5)
    assert got["ssim_global"] == pytest.approx(M.ssim_global(upsampled, native_image, inside, L), abs=1e-9)
    assert got["correlation"] == pytest.approx(
        np.corrcoef(upsampled[inside], native_image[inside])[0, 1], abs=1e-6
    )
    # files, table beside the model grid, report section
    layout = folder.evaluation
    rows = read_csv(layout.native_scores_csv)
    assert tuple(rows[0]) == NATIVE_CSV_COLUMNS and len(rows) == 24
    md = layout.table("native", "md").read_text(encoding="utf-8")
    assert "model grid" in md and "native grid" in md
    assert "22 mm on the model grid and 11 mm on the native grid" in md  # 11-voxel window at 2 / 1 mm
    text = layout.report_html.read_text(encoding="utf-8")
    assert '<section id="native">' in text and '<a href="#native">' in text
    assert not any("not implemented" in n for n in summary.notes)
    doc = json.loads(layout.summary_json.read_text())
    assert doc["native"]["experiments"]["skull_stripped/segnet/bottleneck"]["ssim"][
        "native_mean"
    ] == pytest.approx(1.0)


def test_native_space_without_the_source_cohort_says_why(tmp_path: Path) -> None:
    root, _ = _native_study(tmp_path)
    (tmp_path / "cohort").rename(tmp_path / "moved")
    summary = evaluate_study(root, metrics=["correlation"], progress=False, figures=False)
    assert summary.native is None
    assert "source cohort not found" in summary.skipped["native"]
    assert "Not computed" in (root / "evaluation" / "report.html").read_text(encoding="utf-8")
