"""Victim segmenters: shapes, skip/no-skip contract, training, checkpoints, resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_invert.checkpoint import checkpoint_paths
from napari_invert.config import SegmenterConfig, TrainConfig
from napari_invert.errors import CheckpointError, ConfigError
from napari_invert.models import (
    Cancelled,
    EncoderFeatures,
    batch_indices,
    build_segmenter,
    load_segmenter,
    predict,
    predict_many,
    save_segmenter,
    segmentation_loss,
    train_segmenter,
)

CPU = torch.device("cpu")


def tiny_config(levels: int = 2, **kw: object) -> SegmenterConfig:
    return SegmenterConfig(base_filters=4, levels=levels, **kw)


def synthetic_cohort(n: int, size: int = 16, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Ellipsoid "brains" with a core (class 2) and a shell (class 1) at random places/sizes."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))
    images, labels = [], []
    for _ in range(n):
        centre = rng.uniform(-0.25, 0.25, 3).astype(np.float32)[:, None, None, None]
        radii = rng.uniform(0.45, 0.75, 3).astype(np.float32)[:, None, None, None]
        r = np.sqrt((((grid - centre) / radii) ** 2).sum(0))
        lab = np.where(r < 0.55, 2, np.where(r < 1.0, 1, 0)).astype(np.int64)
        img = np.select([lab == 2, lab == 1], [rng.uniform(0.8, 1.0), rng.uniform(0.35, 0.5)], 0.0)
        img = (img + rng.normal(0, 0.03, img.shape)).astype(np.float32)
        images.append(img)
        labels.append(lab)
    return images, labels


# -- architecture --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["unet", "segnet"])
def test_encode_decode_shapes(arch: str) -> None:
    torch.manual_seed(0)
    model = build_segmenter(arch, tiny_config(levels=3), n_classes=5)
    x = torch.randn(2, 1, 16, 24, 16)
    feats = model.encode(x)
    assert isinstance(feats, EncoderFeatures)
    assert feats.bottleneck.shape == (2, 32, 2, 3, 2)  # 4 * 2**3 filters at 1/8 resolution
    if arch == "unet":
        assert [tuple(s.shape) for s in feats.skips] == [
            (2, 4, 16, 24, 16),
            (2, 8, 8, 12, 8),
            (2, 16, 4, 6, 4),
        ]
        assert feats.indices is None
    else:
        assert feats.skips == []
        assert [tuple(i.shape) for i in feats.indices] == [
            (2, 4, 8, 12, 8),
            (2, 8, 4, 6, 4),
            (2, 16, 2, 3, 2),
        ]
        assert all(i.dtype == torch.int64 for i in feats.indices)
    logits = model.decode(feats)
    assert logits.shape == (2, 5, 16, 24, 16)
    assert torch.equal(model(x), logits)


def test_filters_are_capped() -> None:
    model = build_segmenter("unet", SegmenterConfig(base_filters=4, levels=3, max_filters=8), 3)
    assert model.channels == [4, 8, 8, 8]
    assert model.encode(torch.randn(1, 1, 16, 16, 16)).bottleneck.shape[1] == 8


def test_per_architecture_settings_widen_one_victim_only(tmp_path: Path) -> None:
    config = SegmenterConfig(
        base_filters=4, levels=2, per_architecture={"segnet": {"base_filters": 8, "convs_per_level": 1}}
    )
    unet, segnet = build_segmenter("unet", config, 3), build_segmenter("segnet", config, 3)
    assert unet.channels == [4, 8, 16] and unet.config.convs_per_level == 2
    assert segnet.channels == [8, 16, 32] and segnet.config.convs_per_level == 1
    # one conv per level: the SegNet's first encoder block holds one convolution (8 x 1 x 3^3 + 8)
    assert sum(p.numel() for p in segnet.encoder[0].parameters() if p.dim() == 5) == 8 * 27
    # the saved description holds the settings it was built with, and reloads to the same net
    save_segmenter(tmp_path / "seg", segnet, {})
    loaded, meta = load_segmenter(tmp_path / "seg", CPU)
    saved = meta["segmenter_config"]
    assert saved["base_filters"] == 8 and "per_architecture" not in saved
    assert loaded.channels == [8, 16, 32]
    # a description written before per_architecture existed equals a new one of the same net
    plain = build_segmenter("unet", SegmenterConfig(base_filters=4, levels=2), 3)
    assert plain.spec() == unet.spec()
    with pytest.raises(ValueError, match="per_architecture"):
        SegmenterConfig(per_architecture={"vnet": {"base_filters": 8}})
    with pytest.raises(ValueError, match="levels"):
        SegmenterConfig(per_architecture={"segnet": {"levels": 2}})  # would change the grid


def test_segnet_decodes_from_bottleneck_and_indices_only() -> None:
    torch.manual_seed(0)
    model = build_segmenter("segnet", tiny_config(), n_classes=3).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    feats = model.encode(x)
    out = model.decode(EncoderFeatures(skips=[], bottleneck=feats.bottleneck, indices=feats.indices))
    assert torch.equal(out, model(x))
    # the indices are used: moving the maxima changes the output
    shuffled = [torch.roll(i, 1, dims=-1) for i in feats.indices]
    out2 = model.decode(EncoderFeatures(skips=[], bottleneck=feats.bottleneck, indices=shuffled))
    assert not torch.allclose(out, out2)


def test_unet_decode_uses_skips() -> None:
    torch.manual_seed(0)
    model = build_segmenter("unet", tiny_config(), n_classes=3).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    feats = model.encode(x)
    zeroed = EncoderFeatures([torch.zeros_like(s) for s in feats.skips], feats.bottleneck, None)
    assert not torch.allclose(model.decode(feats), model.decode(zeroed))
    with pytest.raises(ValueError, match="skip"):
        model.decode(EncoderFeatures([], feats.bottleneck, None))


def test_bad_inputs_and_configs() -> None:
    model = build_segmenter("unet", tiny_config(levels=3), n_classes=3)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 1, 12, 16, 16))
    with pytest.raises(ConfigError, match="unknown"):
        build_segmenter("vnet", tiny_config(), 3)
    with pytest.raises(ConfigError, match="odd"):
        build_segmenter("unet", tiny_config(kernel_size=2), 3)


# -- training ---------------------------------------------------------------------------------


def test_batch_indices_cover_every_sample_each_epoch() -> None:
    seen = [i for step in range(5) for i in batch_indices(step, 2, 10, seed=3)]
    assert sorted(seen) == list(range(10))
    assert batch_indices(7, 2, 10, 3) == batch_indices(7, 2, 10, 3)


def test_indexed_dice_ce_equals_monai_dice_ce() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (2, 1, 5, 6, 7))  # class 5 absent
    fast, ref = segmentation_loss("indexed"), segmentation_loss("monai")
    a, b = fast(logits, target), ref(logits, target)
    (ga,) = torch.autograd.grad(a, logits)
    (gb,) = torch.autograd.grad(b, logits)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ga, gb, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("arch", ["unet", "segnet"])
def test_segmenter_loss_falls(arch: str, tmp_path: Path) -> None:
    images, labels = synthetic_cohort(4)
    torch.manual_seed(0)
    model = build_segmenter(arch, tiny_config(), n_classes=3)
    calls: list[tuple[int, int, float]] = []
    rows = train_segmenter(
        model,
        images,
        labels,
        TrainConfig(steps=30, batch_size=2, lr=1e-2, augment=True, checkpoint_every=100),
        CPU,
        curve_path=tmp_path / "curve.csv",
        progress=False,
        on_step=lambda s, t, v: calls.append((s, t, v)),
    )
    losses = [r["loss"] for r in rows]
    assert len(rows) == 30 and [c[0] for c in calls] == list(range(1, 31))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    with open(tmp_path / "curve.csv", newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in curve] == list(range(1, 31))
    assert set(curve[0]) == {"step", "loss", "seconds"}
    pred = predict(model, images[0], CPU)
    assert pred.shape == images[0].shape and pred.dtype == np.int64
    assert set(np.unique(pred)) <= {0, 1, 2}
    if arch == "unet":  # learnt something: foreground found better than chance
        fg = labels[0] > 0
        assert ((pred > 0) == fg).mean() > 0.8


@pytest.mark.parametrize(("arch", "norm"), [("unet", "instance"), ("segnet", "batch")])
def test_predict_many_matches_predict_image_by_image(arch: str, norm: str) -> None:
    """Batching must not mix images: eval-mode normalisation is per sample (instance) or
    uses running statistics (batch), so each label map equals the one-image prediction."""
    torch.manual_seed(3)
    model = build_segmenter(arch, tiny_config(norm=norm), n_classes=3).eval()
    images, _ = synthetic_cohort(5)
    loaded: list[int] = []

    def lazily():  # a generator: predict_many must consume it without materialising it
        for i, im in enumerate(images):
            loaded.append(i)
            yield im

    batched = predict_many(model, lazily(), CPU, batch_size=2)
    assert loaded == []  # nothing read before the first label map is asked for
    first = next(batched)
    assert loaded == [0, 1]  # one batch of two
    labels = [first, *batched]
    assert len(labels) == 5
    for im, lab in zip(images, labels):
        assert lab.dtype == np.int64 and lab.shape == im.shape
        np.testing.assert_array_equal(lab, predict(model, im, CPU))
    with pytest.raises(ConfigError, match="batch_size"):
        predict_many(model, images, CPU, batch_size=0)


def test_predict_many_sizes_its_batches_by_the_logits_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a batch size, a batch holds as many images as fit PREDICT_LOGITS_BUDGET bytes of
    float32 logits (at most 8): small volumes go 8 at a time, large ones one by one."""
    import napari_invert.models.factory as factory

    model = build_segmenter("unet", tiny_config(), n_classes=3).eval()
    images, _ = synthetic_cohort(5)  # 16^3: 3 x 4096 x 4 bytes = 48 KiB of logits each
    for budget, first_batch in ((factory.PREDICT_LOGITS_BUDGET, 5), (2 * 3 * 16**3 * 4, 2), (1, 1)):
        monkeypatch.setattr(factory, "PREDICT_LOGITS_BUDGET", budget)
        loaded: list[int] = []

        def lazily(log: list[int] = loaded):
            for i, im in enumerate(images):
                log.append(i)
                yield im

        labels = predict_many(model, lazily(), CPU)
        next(labels)
        assert len(loaded) == first_batch
        assert len([*labels]) == 4
    assert list(predict_many(model, iter([]), CPU)) == []


def test_training_validates_labels() -> None:
    images, labels = synthetic_cohort(2)
    model = build_segmenter("unet", tiny_config(), n_classes=2)  # labels go up to 2
    with pytest.raises(ValueError, match=r"classes must lie in 0\.\.1"):
        train_segmenter(model, images, labels, TrainConfig(steps=1), CPU, progress=False)


# -- checkpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["unet", "segnet"])
def test_save_load_is_bit_identical(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_segmenter(arch, tiny_config(norm="batch"), n_classes=4).eval()
    # make buffers non-trivial
    with torch.no_grad():
        for _name, buf in model.named_buffers():
            if buf.is_floating_point():
                buf.add_(torch.rand_like(buf))
    save_segmenter(tmp_path / "seg", model, {"fold": 2})
    loaded, meta = load_segmenter(tmp_path / "seg", CPU)
    assert meta["arch"] == arch and meta["n_classes"] == 4 and meta["fold"] == 2
    assert meta["segmenter_config"]["norm"] == "batch"
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_missing_or_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.safetensors"):
        load_segmenter(tmp_path / "nothing")
    model = build_segmenter("unet", tiny_config(), n_classes=3)
    save_segmenter(tmp_path / "seg", model)
    weights, meta = checkpoint_paths(tmp_path / "seg")
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=r"seg\.safetensors"):
        load_segmenter(tmp_path / "seg")
    save_segmenter(tmp_path / "seg", model)
    meta.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"seg\.json"):
        load_segmenter(tmp_path / "seg")


def test_weights_that_do_not_fit_are_rejected(tmp_path: Path) -> None:
    model = build_segmenter("unet", tiny_config(), n_classes=3)
    save_segmenter(tmp_path / "seg", model)
    _, meta_path = checkpoint_paths(tmp_path / "seg")
    import json

    meta = json.loads(meta_path.read_text())
    meta["n_classes"] = 7
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_segmenter(tmp_path / "seg")


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_interrupt_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    images, labels = synthetic_cohort(3)
    cfg = TrainConfig(steps=6, batch_size=2, lr=5e-3, augment=True, checkpoint_every=2, seed=4)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(7)
        return build_segmenter("unet", tiny_config(dropout=0.1), n_classes=3)

    reference = fresh()
    ref_rows = train_segmenter(reference, images, labels, cfg, CPU, progress=False)

    # 1) cooperative cancel before step 4: state saved at step 3
    stem, curve = tmp_path / "ckpt", tmp_path / "curve.csv"
    polls = {"n": 0}

    def stop() -> bool:
        polls["n"] += 1
        return polls["n"] == 4

    model = fresh()
    with pytest.raises(Cancelled) as info:
        train_segmenter(model, images, labels, cfg, CPU, stem, curve, progress=False, should_stop=stop)
    assert info.value.step == 3
    with open(curve, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3

    # 2) a crash (exception in a callback) after step 5: last checkpoint is step 4
    def crash(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    model = fresh()  # new process: fresh init, weights come from the checkpoint
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(model, images, labels, cfg, CPU, stem, curve, progress=False, on_step=crash)

    model = fresh()
    steps_run: list[int] = []
    rows = train_segmenter(
        model,
        images,
        labels,
        cfg,
        CPU,
        stem,
        curve,
        progress=False,
        on_step=lambda s, t, v: steps_run.append(s),
    )
    assert steps_run == [5, 6]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    assert [r["batch"] for r in rows] == [r["batch"] for r in ref_rows]
    ref_w, got_w = _weights(reference), _weights(model)
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    with open(curve, newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, 7))

    # 3) a finished run returns immediately with the trained weights
    model = fresh()
    steps_run.clear()
    again = train_segmenter(
        model,
        images,
        labels,
        cfg,
        CPU,
        stem,
        curve,
        progress=False,
        on_step=lambda s, t, v: steps_run.append(s),
    )
    assert steps_run == [] and len(again) == 6
    got_w = _weights(model)
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)

    # the training checkpoint also loads as a segmenter
    loaded, _ = load_segmenter(stem)
    assert all(torch.equal(ref_w[k], v) for k, v in loaded.state_dict().items())

    # changed settings are refused rather than silently mixed
    with pytest.raises(CheckpointError, match="lr"):
        train_segmenter(
            fresh(), images, labels, cfg.model_copy(update={"lr": 1e-4}), CPU, stem, progress=False
        )


def test_corrupt_training_checkpoint_raises(tmp_path: Path) -> None:
    images, labels = synthetic_cohort(2)
    cfg = TrainConfig(steps=2, batch_size=1, checkpoint_every=1)
    model = build_segmenter("segnet", tiny_config(), n_classes=3)
    train_segmenter(model, images, labels, cfg, CPU, tmp_path / "ck", progress=False)
    weights, _ = checkpoint_paths(tmp_path / "ck")
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"ck\.safetensors"):
        train_segmenter(model, images, labels, cfg, CPU, tmp_path / "ck", progress=False)
