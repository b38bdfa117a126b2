"""Training to a validation plateau: split, plateau stop, best weights, resume, records,
verdicts, flips, bar labels, the study summary and the CLI, and a transfer cohort."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_inputs import blobs

from napari_invert.attack import InversionDecoder, make_tapper, train_inversion_decoder
from napari_invert.cli import main
from napari_invert.config import SegmenterConfig, TrainConfig
from napari_invert.models import Cancelled, build_segmenter, train_segmenter
from napari_invert.models.augment import random_flips
from napari_invert.models.losses import IndexedDiceCELoss, IndexedDiceFocalLoss, segmentation_loss
from napari_invert.models.validation import (
    PlateauState,
    lr_factor,
    majority_label_map,
    mean_foreground_dice,
    segmentation_verdict,
    split_validation,
)
from napari_invert.study.convergence import (
    format_convergence_table,
    summarise_convergence,
    victim_segmentation_check,
)
from napari_invert.study.layout import StudyFolder

CPU = torch.device("cpu")


def cohort(n: int, size: int = 16, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ellipsoids with a bright core (class 2) and a shell (class 1) at random places."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))
    images, labels = [], []
    for _ in range(n):
        centre = rng.uniform(-0.3, 0.3, 3).astype(np.float32)[:, None, None, None]
        radii = rng.uniform(0.45, 0.75, 3).astype(np.float32)[:, None, None, None]
        r = np.sqrt((((grid - centre) / radii) ** 2).sum(0))
        lab = np.where(r < 0.55, 2, np.where(r < 1.0, 1, 0)).astype(np.int64)
        img = np.select([lab == 2, lab == 1], [0.9, 0.4], 0.0) + rng.normal(0, 0.03, lab.shape)
        images.append(img.astype(np.float32))
        labels.append(lab)
    return images, labels


def tiny(arch: str = "unet", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_segmenter(arch, SegmenterConfig(base_filters=4, levels=2), n_classes=3)


# -- split, baseline, verdict, schedule ------------------------------------------------------


def test_split_validation_sizes_determinism_and_small_cohorts() -> None:
    cfg = TrainConfig(validation_fraction=0.2, seed=3)
    a, b = split_validation(10, cfg), split_validation(10, cfg)
    assert a == b and a.source == "held_out" and len(a.validation) == 2
    assert sorted(a.train + a.validation) == list(range(10)) and not set(a.train) & set(a.validation)
    # 3 subjects: 1 held out, 2 left to train on
    assert len(split_validation(3, cfg).validation) == 1
    # 2 subjects: nothing can be held out -> scored on the training subjects, and said so
    small = split_validation(2, cfg)
    assert small.source == "training" and small.train == [0, 1] and small.validation == [0, 1]
    assert "optimistic" in small.note
    off = split_validation(5, cfg.model_copy(update={"validation_fraction": 0.0}))
    assert off.source == "none" and off.validation == [] and off.train == list(range(5))


def test_majority_label_map_and_baseline_dice() -> None:
    a = np.array([[0, 1, 2, 2]])
    b = np.array([[0, 1, 1, 3]])
    c = np.array([[1, 1, 2, 3]])
    assert majority_label_map([a, b, c]).tolist() == [[0, 1, 2, 3]]
    # ties go to the smaller label (background first)
    assert majority_label_map([np.array([2, 0]), np.array([0, 1])]).tolist() == [0, 0]
    ref = np.array([[0, 1, 2, 3]])
    assert mean_foreground_dice([majority_label_map([a, b, c])], [ref], 4) == pytest.approx(1.0)
    assert mean_foreground_dice([np.zeros_like(ref)], [ref], 4) == 0.0


def test_segmentation_verdict_known_answers() -> None:
    ok = segmentation_verdict(0.62, 0.40, min_dice=0.3, min_gain=0.1)
    assert ok["segments"] is True and "0.62" in ok["reason"]
    low = segmentation_verdict(0.12, 0.05, min_dice=0.3, min_gain=0.1)
    assert low["segments"] is False and "below the threshold 0.30" in low["reason"]
    near = segmentation_verdict(0.55, 0.50, min_dice=0.3, min_gain=0.1)
    assert near["segments"] is False and "not clearly above" in near["reason"]
    for verdict in (low, near):  # the verdict says which conclusions still hold
        assert "Feature-inversion results still hold" in verdict["reason"]
        assert "membership inference" in verdict["reason"]
    assert segmentation_verdict(None, 0.2, 0.3, 0.1)["segments"] is False


def test_lr_schedules() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, lr_schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0) and lr_factor(99, cfg) < 0.05
    assert lr_factor(50, cfg.model_copy(update={"lr_schedule": "constant"})) == 1.0
    plateau = cfg.model_copy(update={"lr_schedule": "plateau", "patience": 4, "min_delta": 0.1})
    state = PlateauState()
    for step, score in [(2, 0.5), (4, 0.52), (6, 0.53)]:
        state.update(step, score, True, plateau)
    # halved after patience // 2 = 2 steps without a min_delta gain: at steps 4 and 6
    assert state.lr_scale == 0.25 and lr_factor(20, plateau, state.lr_scale) == 0.25
    assert state.best_step == 6 and state.ref_step == 2 and state.plateaued(6, plateau)


def test_loss_options_match_monai() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 5, 6, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 1, 4, 5, 6))
    for kw in ({"dice_include_background": False}, {"dice_squared_pred": True}):
        cfg = TrainConfig(**kw)
        fast, ref = segmentation_loss("indexed", cfg), segmentation_loss("monai", cfg)
        assert isinstance(fast, IndexedDiceCELoss)
        assert torch.allclose(fast(logits, target), ref(logits, target), rtol=1e-9)
    # Dice + focal without a one-hot target: MONAI's DiceFocalLoss, value and gradient (MONAI
    # computes its focal term in float32, hence the tolerance)
    for kw in ({}, {"dice_include_background": False}, {"dice_squared_pred": True}):
        cfg = TrainConfig(segmentation_loss="dice_focal", **kw)
        fast, ref = segmentation_loss("indexed", cfg), segmentation_loss("monai", cfg)
        assert isinstance(fast, IndexedDiceFocalLoss)
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        value_fast, value_ref = fast(a, target), ref(b, target)
        value_fast.backward()
        value_ref.backward()
        assert float(value_fast.detach()) == pytest.approx(float(value_ref.detach()), rel=1e-6)
        assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-8)


# -- flips ------------------------------------------------------------------------------------


def test_flips_move_image_and_labels_together() -> None:
    images, labels = cohort(4, seed=5)
    x = torch.from_numpy(np.stack(images))[:, None]
    y = torch.from_numpy(np.stack(labels))[:, None]
    fx, fy = random_flips([x, y], [0, 2], np.random.default_rng([1, 2, 11]))
    draws = np.random.default_rng([1, 2, 11]).random((4, 2)) < 0.5
    assert draws.any() and not draws.all()  # this seed flips some samples, not all
    for i in range(4):
        dims = [d for d, flip in zip([1, 3], draws[i]) if flip]
        expect_x = torch.flip(x[i], dims) if dims else x[i]
        expect_y = torch.flip(y[i], dims) if dims else y[i]
        assert torch.equal(fx[i], expect_x) and torch.equal(fy[i], expect_y)
        # labels still sit on the image's structures: bright voxels are the core class
        assert ((fx[i] > 0.7) == (fy[i] == 2)).float().mean() > 0.99
    assert torch.equal(x, torch.from_numpy(np.stack(images))[:, None])  # inputs untouched
    same = random_flips([x, y], [], np.random.default_rng(0))
    assert same[0] is x and same[1] is y


def test_flip_augmentation_trains_and_is_deterministic() -> None:
    images, labels = cohort(4)
    cfg = TrainConfig(steps=4, batch_size=2, augment=True, flip_axes=[0, 1], validation_fraction=0)
    runs = []
    for _ in range(2):
        model = tiny()
        rows = train_segmenter(model, images, labels, cfg, CPU, progress=False)
        runs.append(([r["loss"] for r in rows], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    no_flip = train_segmenter(
        tiny(), images, labels, cfg.model_copy(update={"flip_axes": []}), CPU, progress=False
    )
    assert [r["loss"] for r in no_flip] != runs[0][0]


# -- the loop: plateau, best weights, resume, records -----------------------------------------


def test_plateau_stops_early_and_keeps_the_best_weights(tmp_path: Path) -> None:
    images, labels = cohort(6)
    # lr so small that the validation Dice cannot move: the first evaluation stays best
    cfg = TrainConfig(steps=200, batch_size=2, lr=1e-12, validate_every=2, patience=4, min_delta=0.01)
    model = tiny()
    rec_path = tmp_path / "conv.json"
    rows = train_segmenter(model, images, labels, cfg, CPU, progress=False, convergence_path=rec_path)
    rec = json.loads(rec_path.read_text())
    assert len(rows) == 6 and rec["steps_run"] == 6  # evals at 2, 4, 6: 6 - 2 >= patience
    assert rec["stop_reason"] == "plateau" and rec["status"] == "finished"
    assert rec["best_step"] == 2 and [c["step"] for c in rec["curve"]] == [2, 4, 6]
    assert rec["validation_source"] == "held_out" and len(rec["validated_on"]) == 1
    assert not set(rec["validated_on"]) & {i for r in rows for i in r["batch"]}
    assert rec["segments"] is False and "Feature-inversion" in rec["segments_reason"]
    # the returned weights are the best (step 2) ones: equal to a 2-step run
    ref = tiny()
    train_segmenter(ref, images, labels, cfg.model_copy(update={"steps": 2}), CPU, progress=False)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())


def test_learning_victim_segments_and_runs_to_max_steps(tmp_path: Path) -> None:
    images, labels = cohort(6)
    cfg = TrainConfig(
        steps=40, batch_size=2, lr=1e-2, validate_every=10, patience=30, min_validation_dice=0.3
    )
    rec_path = tmp_path / "conv.json"
    train_segmenter(tiny(), images, labels, cfg, CPU, progress=False, convergence_path=rec_path)
    rec = json.loads(rec_path.read_text())
    assert rec["stop_reason"] == "max_steps" and rec["steps_run"] == 40
    assert rec["best_score"] > rec["baseline_score"] + 0.1 and rec["segments"] is True
    assert rec["curve"][-1]["train_loss"] < rec["curve"][0]["train_loss"]


def test_resume_with_validation_matches_uninterrupted_run(tmp_path: Path) -> None:
    images, labels = cohort(5)
    cfg = TrainConfig(
        steps=12,
        batch_size=2,
        lr=5e-3,
        validate_every=2,
        patience=6,
        checkpoint_every=3,
        lr_schedule="plateau",
        warmup_steps=2,
        seed=2,
    )
    ref_model = tiny()
    ref_rows = train_segmenter(
        ref_model, images, labels, cfg, CPU, progress=False, convergence_path=tmp_path / "ref.json"
    )
    ref_rec = json.loads((tmp_path / "ref.json").read_text())

    stem, rec_path = tmp_path / "ck", tmp_path / "conv.json"
    polls = {"n": 0}

    def stop() -> bool:
        polls["n"] += 1
        return polls["n"] == 6  # cancelled before step 6: checkpoint at step 5

    with pytest.raises(Cancelled):
        train_segmenter(
            tiny(),
            images,
            labels,
            cfg,
            CPU,
            stem,
            progress=False,
            should_stop=stop,
            convergence_path=rec_path,
        )
    assert json.loads(rec_path.read_text())["stop_reason"] == "cancelled"
    model = tiny()
    rows = train_segmenter(model, images, labels, cfg, CPU, stem, progress=False, convergence_path=rec_path)
    rec = json.loads(rec_path.read_text())
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    assert rec["curve"] == ref_rec["curve"] and rec["best_step"] == ref_rec["best_step"]
    assert rec["stop_reason"] == ref_rec["stop_reason"]
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in model.state_dict().items())
    # finished: returns at once with the best weights
    again = tiny()
    train_segmenter(again, images, labels, cfg, CPU, stem, progress=False)
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in again.state_dict().items())


def test_decoder_validation_on_attack_subjects(tmp_path: Path) -> None:
    images = blobs(8, seed=1)
    tapper = make_tapper(tiny(), "bottleneck+skips")
    torch.manual_seed(0)
    decoder = InversionDecoder.for_tapper(tapper, images[0], base_filters=8)
    cfg = TrainConfig(steps=60, batch_size=2, lr=3e-3, augment=False, validate_every=20, patience=100)
    rec_path = tmp_path / "dec.json"
    rows = train_inversion_decoder(
        tapper,
        decoder,
        images,
        cfg,
        CPU,
        progress=False,
        convergence_path=rec_path,
        description="fold 0 unet bottleneck+skips decoder",
    )
    rec = json.loads(rec_path.read_text())
    assert rec["metric"] == "mse" and rec["higher_is_better"] is False and rec["network"] == "decoder"
    assert rec["label"] == "fold 0 unet bottleneck+skips decoder"
    assert rec["best_score"] < rec["baseline_score"]  # beats the attacker's mean image
    assert not set(rec["validated_on"]) & {i for r in rows for i in r["batch"]}


def test_progress_bars_are_labelled(capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = cohort(3)
    cfg = TrainConfig(steps=2, batch_size=1, validation_fraction=0)
    train_segmenter(
        tiny(), images, labels, cfg, CPU, progress=True, description="skull_stripped fold 3 unet victim"
    )
    assert "skull_stripped fold 3 unet victim" in capsys.readouterr().err
    train_segmenter(tiny(), images, labels, cfg, CPU, progress=True)
    assert "unet victim" in capsys.readouterr().err


# -- study summary, check and CLI -------------------------------------------------------------


def _fake_study(root: Path) -> StudyFolder:
    """A study folder whose records are written by real (tiny) training runs."""
    folder = StudyFolder(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "splits.json", "cohort.json"):
        (root / name).write_text("{}\n")
    images, labels = cohort(6)
    good = TrainConfig(steps=30, batch_size=2, lr=1e-2, validate_every=10, patience=100)
    bad = good.model_copy(update={"lr": 1e-12, "steps": 10})
    train_segmenter(
        tiny("unet"),
        images,
        labels,
        good,
        CPU,
        progress=False,
        convergence_path=folder.segmenter_convergence("skull_stripped", 0, "unet"),
    )
    train_segmenter(
        tiny("segnet"),
        images,
        labels,
        bad,
        CPU,
        progress=False,
        convergence_path=folder.segmenter_convergence("skull_stripped", 0, "segnet"),
    )
    tapper = make_tapper(tiny(), "bottleneck")
    decoder = InversionDecoder.for_tapper(tapper, images[0], base_filters=4)
    train_inversion_decoder(
        tapper,
        decoder,
        images,
        TrainConfig(steps=4, augment=False),
        CPU,
        progress=False,
        convergence_path=folder.decoder_convergence("skull_stripped", 0, "unet", "bottleneck"),
    )
    return folder


def test_summary_check_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _fake_study(tmp_path / "study")
    rows = summarise_convergence(folder)
    assert [(r["network"], r["arch"], r["tap"]) for r in rows] == [
        ("victim", "segnet", None),
        ("victim", "unet", None),
        ("decoder", "unet", "bottleneck"),
    ]
    by_arch = {r["arch"]: r for r in rows if r["network"] == "victim"}
    assert by_arch["unet"]["segments"] is True and by_arch["segnet"]["segments"] is False
    assert rows[2]["metric"] == "mse" and rows[2]["steps_run"] == 4
    check = victim_segmentation_check(folder)
    assert not check["ok"] and [r["arch"] for r in check["failing"]] == ["segnet"]
    assert "fold 0 segnet" in check["message"] and "Feature-inversion" in check["message"]
    n_held_out = check["failing"][0]["n_validation"]
    assert n_held_out == 1 and "on 1 held-out subject (stopped:" in check["message"]
    assert "Judged on validation subjects only, one or two of them: a noisy verdict" in check["message"]
    assert "tells a victim that memorised its training subjects" in check["message"]
    table = format_convergence_table(rows)
    assert "NO" in table and "yes" in table
    assert main(["study-info", str(folder.root)]) == 1
    out = capsys.readouterr()
    assert "segnet" in out.out and "WARNING: 1 of 2 victim segmenters do not segment" in out.out
    assert main(["study-info", str(tmp_path)]) == 2  # not a study: one clear error


# -- a cohort unlike LPBA40: relabelled, reoriented, rescaled ---------------------------------


def test_transfer_cohort_trains_both_architectures(lpba40: Path, tmp_path: Path) -> None:
    """LPBA40 merged to 28 new label values, axes permuted + flipped, intensities rescaled,
    subjects displaced (not co-registered), at 8 mm: quick_cpu's victim training settings
    (Dice + focal loss, lr 0.01; step cap lowered to 150) put both victims' validation Dice
    at least ``min_dice_gain`` above the majority-label prior of their own training labels,
    and a crippled run (25 steps) is judged "does not segment" with the reason given."""
    from napari_invert.bench.transfer import build_transfer_cohort
    from napari_invert.config import PreprocessConfig, load_config
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.prepare import prepare_cohort

    root = build_transfer_cohort(tmp_path / "cohort", lpba40, n_subjects=6, downsample=8, shift_mm=16)
    img = nib.load(str(root / "images" / "sub-001.nii.gz"))
    assert nib.aff2axcodes(img.affine) != ("L", "P", "S") and img.get_data_dtype() == np.int16
    labels = np.unique(np.asarray(nib.load(str(root / "labels" / "sub-001.nii.gz")).dataobj))
    assert labels[0] == 0 and set(labels[1:]) <= set(range(100, 200, 3))
    prepared = prepare_cohort(
        Cohort.from_path(root, kind="folder"),
        PreprocessConfig(voxel_mm=8.0),
        multiple_of=4,
        variant="skull_stripped",
        label_mode="restrict_to_mask",
    )
    n_classes = prepared.label_table.n_classes
    assert n_classes > 20
    images = [s.image for s in prepared.subjects]
    labs = [s.labels for s in prepared.subjects]
    quick = load_config(Path(__file__).parent.parent / "sample_configs" / "quick_cpu.yaml")
    assert quick.segmenter_training.segmentation_loss == "dice_focal"  # the measured choice
    # the same 16 mm shift range as quick_cpu (4 voxels at 4 mm) on this 8 mm grid
    cfg = quick.segmenter_training.model_copy(update={"steps": 150, "validate_every": 25, "shift_voxels": 2})

    def train(arch: str, config: TrainConfig, name: str) -> dict:
        torch.manual_seed(0)
        model = build_segmenter(arch, SegmenterConfig(base_filters=8, levels=2), n_classes)
        rec_path = tmp_path / f"{name}.json"
        train_segmenter(model, images, labs, config, CPU, progress=False, convergence_path=rec_path)
        return json.loads(rec_path.read_text())

    for arch in ("unet", "segnet"):
        rec = train(arch, cfg, arch)
        assert rec["validation_source"] == "held_out" and len(rec["validated_on"]) == 1
        assert rec["stop_reason"] in ("plateau", "max_steps")
        gain = rec["best_score"] - rec["baseline_score"]
        assert gain >= cfg.min_dice_gain, (arch, rec["best_score"], rec["baseline_score"])
    # crippled: stopped after one evaluation, before it learned anything beyond the prior
    crippled = train("segnet", cfg.model_copy(update={"steps": 25}), "crippled")
    assert crippled["steps_run"] == 25 and crippled["segments"] is False
    assert "not clearly above the majority-label baseline" in crippled["segments_reason"]
    assert "Feature-inversion results still hold" in crippled["segments_reason"]
