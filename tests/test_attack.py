"""The inversion attack: taps, the inversion decoder, its training and reconstruction."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet, UNet
from tiny_inputs import blobs
from torch import nn

from napari_invert.attack import (
    Cancelled,
    HookTapper,
    InversionDecoder,
    build_ladder,
    load_decoder,
    make_tapper,
    reconstruct,
    save_decoder,
    train_inversion_decoder,
)
from napari_invert.checkpoint import checkpoint_paths
from napari_invert.config import SegmenterConfig, TrainConfig
from napari_invert.errors import CheckpointError, ConfigError
from napari_invert.models import build_segmenter
from napari_invert.models.validation import split_validation

CPU = torch.device("cpu")


def victim(arch: str, levels: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_segmenter(arch, SegmenterConfig(base_filters=4, levels=levels), n_classes=3)


# -- taps ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "tap", "names", "shapes"),
    [
        ("unet", "bottleneck", ["bottleneck"], [(1, 32, 2, 2, 2)]),
        (
            "unet",
            "bottleneck+skips",
            ["bottleneck", "skip0", "skip1", "skip2"],
            [(1, 32, 2, 2, 2), (1, 4, 16, 16, 16), (1, 8, 8, 8, 8), (1, 16, 4, 4, 4)],
        ),
        ("segnet", "bottleneck", ["bottleneck"], [(1, 32, 2, 2, 2)]),
        (
            "segnet",
            "bottleneck+indices",
            ["bottleneck", "indices0", "indices1", "indices2"],
            [(1, 32, 2, 2, 2), (1, 4, 8, 8, 8), (1, 8, 4, 4, 4), (1, 16, 2, 2, 2)],
        ),
    ],
)
def test_tap_contents(arch: str, tap: str, names: list[str], shapes: list[tuple[int, ...]]) -> None:
    model = victim(arch, levels=3)
    model.train()
    tapper = make_tapper(model, tap)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(1, 1, 16, 16, 16, requires_grad=True)
    out = tapper(x)
    assert tapper.names == names
    assert [tuple(t.shape) for t in out] == shapes
    assert not any(t.requires_grad for t in out)
    desc = tapper.describe()
    assert [d["name"] for d in desc] == names and [tuple(d["shape"]) for d in desc] == shapes
    assert all((d["dtype"] == "int64") == n.startswith("indices") for d, n in zip(desc, names))
    # exactly what encode() returns
    feats = model.encode(x)
    assert torch.equal(out[0], feats.bottleneck)


def test_tap_must_fit_architecture() -> None:
    with pytest.raises(ConfigError, match="segnet has no skip connections"):
        make_tapper(victim("segnet"), "bottleneck+skips")
    with pytest.raises(ConfigError, match="unet has no pooling indices"):
        make_tapper(victim("unet"), "bottleneck+indices")
    with pytest.raises(ConfigError, match="HookTapper"):
        make_tapper(nn.Conv3d(1, 1, 3), "bottleneck")


def test_hook_tapper_on_stock_monai_unet() -> None:
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2))
    hooks_before = {n: len(m._forward_hooks) for n, m in net.named_modules()}
    layers = ["model.0", "model.1.submodule.0", "model.1.submodule.1.submodule"]
    tapper = HookTapper(net, layers)
    out = tapper(torch.randn(2, 1, 16, 16, 16))
    assert [tuple(t.shape) for t in out] == [(2, 4, 8, 8, 8), (2, 8, 4, 4, 4), (2, 16, 4, 4, 4)]
    assert [d["name"] for d in tapper.describe()] == layers
    # the network is unchanged: no hooks left behind, still callable normally
    assert {n: len(m._forward_hooks) for n, m in net.named_modules()} == hooks_before
    assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    # a decoder fits the generic taps (grouped by size, coarse to fine)
    decoder = InversionDecoder.for_tapper(tapper, torch.zeros(1, 1, 16, 16, 16), base_filters=4)
    assert decoder.ladder == [(4, 4, 4), (8, 8, 8), (16, 16, 16)]
    assert decoder(out).shape == (2, 1, 16, 16, 16)


def test_hook_tapper_on_basic_unet_and_wrong_names() -> None:
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    tapper = HookTapper(net, ["down_4", "conv_0"])
    out = tapper(torch.randn(1, 1, 32, 32, 32))
    assert [tuple(t.shape) for t in out] == [(1, 16, 2, 2, 2), (1, 4, 32, 32, 32)]
    with pytest.raises(ConfigError, match=r"no layer named 'down_9'.*available: .*'down_4'"):
        HookTapper(net, ["down_9"])


def test_hook_tapper_captures_pooling_indices() -> None:
    class Pooler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(1, 4, 3, padding=1)
            self.pool = nn.MaxPool3d(2, return_indices=True)
            self.deep = nn.Conv3d(4, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.pool(self.conv(x))
            return self.deep(h)

    tapper = HookTapper(Pooler(), ["deep", "pool"])
    out = tapper(torch.randn(1, 1, 16, 16, 16))
    assert tapper.names == ["deep", "pool[0]", "pool[1]"]
    assert out[2].dtype == torch.int64
    decoder = InversionDecoder.for_tapper(tapper, torch.zeros(1, 1, 16, 16, 16), base_filters=4)
    assert [i.is_index for i in decoder.inputs] == [False, False, True]
    assert decoder(out).shape == (1, 1, 16, 16, 16)


# -- decoder -----------------------------------------------------------------------------------


def test_build_ladder() -> None:
    assert build_ladder([(2, 2, 2)], (16, 16, 16)) == [(2, 2, 2), (4, 4, 4), (8, 8, 8), (16, 16, 16)]
    assert build_ladder([(3, 4, 3), (12, 16, 12)], (24, 32, 24)) == [
        (3, 4, 3),
        (6, 8, 6),
        (12, 16, 12),
        (24, 32, 24),
    ]
    with pytest.raises(ValueError, match="larger than the output"):
        build_ladder([(32, 32, 32)], (16, 16, 16))
    with pytest.raises(ValueError, match="pyramid"):
        build_ladder([(2, 8, 2), (4, 4, 4)], (16, 16, 16))


def test_decoder_uses_pooling_indices() -> None:
    tapper = make_tapper(victim("segnet"), "bottleneck+indices")
    x = torch.randn(1, 1, 16, 16, 16)
    decoder = InversionDecoder.for_tapper(tapper, x, base_filters=4).eval()
    taps = tapper(x)
    moved = [taps[0], *[torch.roll(t, 1, dims=-1) for t in taps[1:]]]
    with torch.no_grad():
        assert not torch.allclose(decoder(taps), decoder(moved))
    with pytest.raises(ValueError, match="expects 3 tapped tensors"):
        decoder(taps[:1])


@pytest.mark.parametrize(
    ("arch", "tap", "max_ratio"), [("unet", "bottleneck+skips", 0.5), ("segnet", "bottleneck+indices", 0.8)]
)
def test_decoder_learns_and_beats_the_prior(arch: str, tap: str, max_ratio: float) -> None:
    """Unseen ("private") volumes are reconstructed better than by the attacker's mean image."""
    attack, private = blobs(8, seed=1), blobs(4, seed=2)
    tapper = make_tapper(victim(arch), tap)
    torch.manual_seed(0)
    decoder = InversionDecoder.for_tapper(tapper, attack[0], base_filters=8)
    rows = train_inversion_decoder(
        tapper,
        decoder,
        attack,
        TrainConfig(steps=60, batch_size=2, lr=3e-3, augment=False, checkpoint_every=1000),
        CPU,
        progress=False,
    )
    losses = [r["loss"] for r in rows]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    recon = reconstruct(tapper, decoder, private, CPU)
    assert all(r.shape == (16, 16, 16) and r.dtype == np.float32 for r in recon)
    prior = np.mean(attack, axis=0)
    mse_recon = np.mean([np.mean((r - p) ** 2) for r, p in zip(recon, private)])
    mse_prior = np.mean([np.mean((prior - p) ** 2) for p in private])
    assert mse_recon < max_ratio * mse_prior


class RecordingImages(Sequence):
    """A read-only sequence that records which of its arrays were read."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = arrays
        self.read: set[int] = set()

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        value = self.arrays[i]  # IndexError ends iteration before recording
        self.read.add(int(i))
        return value


@pytest.mark.parametrize("augment", [False, True])
def test_decoder_trains_on_attack_images_only(augment: bool) -> None:
    attack_arrays, private = blobs(5, seed=3), blobs(3, seed=4)
    attack = RecordingImages(attack_arrays)
    tapper = make_tapper(victim("unet"), "bottleneck")
    decoder = InversionDecoder.for_tapper(tapper, attack_arrays[0], base_filters=4)
    seen_inputs: list[torch.Tensor] = []
    handle = decoder.register_forward_pre_hook(lambda m, args: seen_inputs.append(args[0][0].clone()))
    rows = train_inversion_decoder(
        tapper, decoder, attack, TrainConfig(steps=6, batch_size=2, augment=augment), CPU, progress=False
    )
    handle.remove()
    used = {i for r in rows for i in r["batch"]}
    assert used <= set(range(len(attack_arrays)))
    # one attack subject is held out for validation (20 % of 5, by the seed), never trained on
    held_out = set(split_validation(5, TrainConfig(steps=6, batch_size=2)).validation)
    assert len(held_out) == 1
    assert used == set(range(5)) - held_out  # every other attack subject, one epoch = 2 steps
    assert attack.read <= set(range(len(attack_arrays)))
    # every bottleneck the decoder saw came from an attack image, none from a private one
    with torch.no_grad():
        attack_taps = tapper(torch.from_numpy(np.stack(attack_arrays))[:, None])[0]
        private_taps = tapper(torch.from_numpy(np.stack(private))[:, None])[0]
    for seen, row in zip(seen_inputs, rows):
        if not augment:
            assert torch.allclose(seen, attack_taps[row["batch"]], atol=1e-5)
        for p in private_taps:
            assert not any(torch.allclose(s, p, atol=1e-4) for s in seen)


def test_decoder_save_load_bit_identical(tmp_path: Path) -> None:
    tapper = make_tapper(victim("segnet"), "bottleneck+indices")
    x = torch.from_numpy(blobs(1)[0])[None, None]
    torch.manual_seed(0)
    decoder = InversionDecoder.for_tapper(tapper, x, base_filters=4).eval()
    save_decoder(tmp_path / "dec", decoder, {"fold": 1})
    loaded, meta = load_decoder(tmp_path / "dec", CPU)
    assert meta["fold"] == 1 and meta["decoder"]["tapper"]["tap"] == "bottleneck+indices"
    a, b = decoder.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(decoder(tapper(x)), loaded(tapper(x)))
    weights, _ = checkpoint_paths(tmp_path / "dec")
    weights.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"dec\.safetensors"):
        load_decoder(tmp_path / "dec")


def test_decoder_cancel_resume_and_losses(tmp_path: Path) -> None:
    attack = blobs(4, seed=5)
    tapper = make_tapper(victim("unet"), "bottleneck+skips")
    cfg = TrainConfig(steps=5, batch_size=2, lr=2e-3, augment=False, checkpoint_every=2)

    def fresh() -> InversionDecoder:
        torch.manual_seed(3)
        return InversionDecoder.for_tapper(tapper, attack[0], base_filters=4)

    reference = fresh()
    train_inversion_decoder(tapper, reference, attack, cfg, CPU, loss="mse+ssim", progress=False)

    stem, curve = tmp_path / "dec_train", tmp_path / "decoder_curve.csv"
    with pytest.raises(Cancelled):
        train_inversion_decoder(
            tapper,
            fresh(),
            attack,
            cfg,
            CPU,
            "mse+ssim",
            stem,
            curve,
            progress=False,
            should_stop=iter([False, False, False, True]).__next__,
        )
    decoder = fresh()
    rows = train_inversion_decoder(tapper, decoder, attack, cfg, CPU, "mse+ssim", stem, curve, progress=False)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    ref, got = reference.state_dict(), decoder.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    with open(curve, newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5]
    # a finished run returns at once, with the trained weights, without training
    calls: list[int] = []
    again = fresh()
    rows2 = train_inversion_decoder(
        tapper,
        again,
        attack,
        cfg,
        CPU,
        "mse+ssim",
        stem,
        curve,
        progress=False,
        on_step=lambda s, t, v: calls.append(s),
    )
    assert calls == [] and len(rows2) == 5
    assert all(torch.equal(ref[k], v) for k, v in again.state_dict().items())
    loaded, _ = load_decoder(stem)  # the training checkpoint loads as a decoder
    assert all(torch.equal(ref[k], v) for k, v in loaded.state_dict().items())
    # a different loss is a different model: refused
    with pytest.raises(CheckpointError, match="different model"):
        train_inversion_decoder(tapper, fresh(), attack, cfg, CPU, "l1", stem, progress=False)
    rows_l1 = train_inversion_decoder(tapper, fresh(), attack, cfg, CPU, "l1", progress=False)
    assert all(np.isfinite(r["loss"]) for r in rows_l1)
