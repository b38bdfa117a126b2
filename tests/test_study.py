"""The k-fold study runner end to end on a tiny demo cohort: artifacts, the attacker's
data boundary, interrupt-and-resume, and refusal to mix configurations."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_inputs import TINY_STUDY, demo_cohort_for, with_cohort

from napari_invert._io import read_json
from napari_invert.config import parse_config
from napari_invert.errors import ConfigError
from napari_invert.models import Cancelled
from napari_invert.study.layout import StudyFolder
from napari_invert.study.runner import StudyRunner

TINY = TINY_STUDY


def _artifacts(root: Path) -> set[str]:
    """Relative paths of every result file (resume checkpoints and caches excluded)."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "_resume" not in p.name and "cache" not in p.parts and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def demo_cohort(tmp_path_factory) -> Path:
    return demo_cohort_for(TINY, tmp_path_factory.mktemp("cohort"))


def _config(demo_cohort: Path, **changes):
    return parse_config(with_cohort(TINY, demo_cohort, **changes))


def test_interrupt_and_resume_gives_the_same_artifacts(tmp_path, demo_cohort):
    config = _config(demo_cohort)
    straight = StudyRunner(config, tmp_path / "straight", progress=False).run()

    calls = {"n": 0}

    def stop_after_seven() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Cancelled):
        StudyRunner(config, interrupted, progress=False, should_stop=stop_after_seven).run()
    partial = StudyFolder(interrupted).read_manifest()["steps"]
    assert 0 < len(partial) < len(straight.read_manifest()["steps"])

    StudyRunner(config, interrupted, progress=False).run()
    assert _artifacts(interrupted) == _artifacts(straight.root)
    assert set(StudyFolder(interrupted).read_manifest()["steps"]) == set(straight.read_manifest()["steps"])

    # a third run has nothing left to do and rewrites no result
    recon = StudyFolder(interrupted).recon(
        "skull_stripped",
        0,
        "unet",
        "bottleneck+skips",
        read_json(interrupted / "splits.json")["folds"][0]["private"][0],
    )
    before = recon.stat().st_mtime_ns
    StudyRunner(config, interrupted, progress=False).run()
    assert recon.stat().st_mtime_ns == before


def test_study_artifacts_and_attacker_boundary(tmp_path, demo_cohort):
    config = _config(demo_cohort)
    folder = StudyRunner(config, tmp_path / "s", progress=False).run()
    splits = folder.read_splits()
    cohort = folder.read_cohort()
    assert sorted(cohort["subject_ids"]) == [f"D{i:02d}" for i in range(1, 7)]
    for fold in splits["folds"]:
        k, private, attack = fold["fold"], fold["private"], fold["attack"]
        assert not set(private) & set(attack)
        for arch, tap in (("unet", "bottleneck+skips"), ("segnet", "bottleneck+indices")):
            seg_meta = read_json(folder.segmenter_stem("skull_stripped", k, arch).with_suffix(".json"))
            assert seg_meta["trained_on"] == private  # the victim trains on private data
            dec_meta = read_json(folder.decoder_stem("skull_stripped", k, arch, tap).with_suffix(".json"))
            assert dec_meta["trained_on"] == attack  # the attacker never sees a private image
            assert not set(dec_meta["trained_on"]) & set(private)
            for sid in private + attack:
                model_grid = nib.load(folder.recon("skull_stripped", k, arch, tap, sid))
                assert model_grid.shape == tuple(cohort["shape"])
                np.testing.assert_allclose(model_grid.affine, cohort["affine"], atol=1e-5)
                native_path = folder.recon_native("skull_stripped", k, arch, tap, sid)
                assert native_path.is_file() == (sid in private)  # native grid: private only
                if sid in private:
                    native = nib.load(native_path)
                    source = nib.load(demo_cohort / "images" / f"{sid}.nii.gz")
                    assert native.shape == source.shape  # written back on the subject's own grid
                    np.testing.assert_allclose(native.affine, source.affine, atol=1e-4)
            assert (folder.arch_dir("skull_stripped", k, arch) / "segmenter_curve.csv").is_file()
            # convergence: records beside the curves; held-out subjects are the victim's own
            rec = read_json(folder.segmenter_convergence("skull_stripped", k, arch))
            assert rec["status"] == "finished" and rec["subject_ids"] == private
            assert set(seg_meta["fitted_on"]) | set(seg_meta["validated_on"]) == set(private)
            assert not set(seg_meta["fitted_on"]) & set(seg_meta["validated_on"])
            # the finished victim is tested on the fold's unseen subjects, which it never saw
            test = rec["test"]
            assert test["subjects"] == attack
            assert len(test["dice"]) == len(test["baseline_dice"]) == len(attack)
            assert test["for_steps_run"] == rec["steps_run"] and test["n"] == len(attack)
            assert test["mean_dice"] == pytest.approx(np.mean(test["dice"]))
            assert len(test["fitted_dice"]) == len(seg_meta["fitted_on"])  # also scored on those
            dec_rec = read_json(folder.decoder_convergence("skull_stripped", k, arch, tap))
            assert dec_rec["network"] == "decoder" and dec_rec["subject_ids"] == attack
            assert set(dec_meta["validated_on"]) <= set(attack)
        prior = nib.load(folder.prior("skull_stripped", k)).get_fdata()
        originals = [nib.load(folder.original("skull_stripped", s)).get_fdata() for s in attack]
        np.testing.assert_allclose(prior, np.mean(originals, axis=0), atol=1e-5)


def test_a_resumed_study_tests_victims_that_lack_the_unseen_test(tmp_path, demo_cohort):
    """A study from before the unseen-subject test gains it on the next run, without retraining."""
    import torch

    from napari_invert._io import write_json_atomic
    from napari_invert.study.convergence import summarise_convergence

    config = _config(demo_cohort, num_threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        folder = StudyRunner(config, tmp_path / "s", progress=False, folds=[0], architectures=["unet"]).run()
        assert torch.get_num_threads() == 2  # the study's one thread is not left behind
    finally:
        torch.set_num_threads(threads)
    path = folder.segmenter_convergence("skull_stripped", 0, "unet")
    record = read_json(path)
    expected = record.pop("test")
    write_json_atomic(path, record)
    (row,) = [r for r in summarise_convergence(folder) if r["network"] == "victim"]
    assert row["judged_on"] == "validation" and row["n_test"] == 0
    weights = folder.segmenter_stem("skull_stripped", 0, "unet").with_suffix(".safetensors")
    before = weights.stat().st_mtime_ns
    StudyRunner(config, tmp_path / "s", progress=False, folds=[0], architectures=["unet"]).run()
    assert weights.stat().st_mtime_ns == before  # not retrained
    assert read_json(path)["test"]["dice"] == pytest.approx(expected["dice"])
    (row,) = [r for r in summarise_convergence(folder) if r["network"] == "victim"]
    assert row["judged_on"] == "unseen" and row["n_test"] == len(expected["subjects"])
    assert row["segments"] is expected["segments"]
    assert row["test_score"] == pytest.approx(expected["mean_dice"])


def test_a_different_config_is_refused(tmp_path, demo_cohort):
    StudyRunner(_config(demo_cohort), tmp_path / "s", progress=False, folds=[0], architectures=["unet"]).run()
    changed = _config(demo_cohort, folds=3)
    with pytest.raises(ConfigError, match=r"different configuration.*folds"):
        StudyRunner(changed, tmp_path / "s", progress=False).run()
