"""Defences: feature noise and quantisation, distance correlation (NoPeek), the expose-less
networks, DP-SGD's accountant and refusals, and the defences config."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from napari_invert.config import SegmenterConfig, TrainConfig, parse_config
from napari_invert.defences import (
    DefenceSpec,
    DefendedSegmenter,
    ExposedTapper,
    FeatureNoise,
    FeatureQuantiser,
    distance_correlation,
    expand_defences,
)
from napari_invert.defences.dcor import nopeek_penalty, patch_pairs
from napari_invert.defences.frontier import pareto_front
from napari_invert.defences.training import train_defended_victim
from napari_invert.errors import ConfigError
from napari_invert.models import build_segmenter, load_segmenter, save_segmenter
from napari_invert.models.base import EncoderFeatures

SMALL = SegmenterConfig(base_filters=4, levels=2, convs_per_level=1)


def _features(seed: int = 0, scale: float = 3.0) -> EncoderFeatures:
    g = torch.Generator().manual_seed(seed)
    return EncoderFeatures(
        skips=[scale * torch.randn(2, 4, 16, 16, 16, generator=g), torch.randn(2, 8, 8, 8, 8, generator=g)],
        bottleneck=torch.randn(2, 16, 4, 4, 4, generator=g) + 5.0,
        indices=None,
    )


# -- feature noise -------------------------------------------------------------------------------
def test_noise_at_sigma_zero_is_the_identity() -> None:
    f = _features()
    out = FeatureNoise(0.0).eval()(f)
    for a, b in zip([f.bottleneck, *f.skips], [out.bottleneck, *out.skips]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_noise_std_is_sigma_times_the_tensor_std(sigma: float) -> None:
    f = _features(scale=3.0)
    out = FeatureNoise(sigma, seed=1).eval()(f)
    for a, b in zip([f.bottleneck, *f.skips], [out.bottleneck, *out.skips]):
        for i in range(a.shape[0]):  # per volume
            expected = sigma * float(a[i].std())
            measured = float((b[i] - a[i]).std())
            assert measured == pytest.approx(expected, rel=0.05)
            assert float((b[i] - a[i]).mean()) == pytest.approx(0.0, abs=0.1 * expected)


def test_noise_is_seeded_at_inference() -> None:
    f = _features()
    a = FeatureNoise(1.0, seed=7).eval()(f).bottleneck
    b = FeatureNoise(1.0, seed=7).eval()(f).bottleneck
    c = FeatureNoise(1.0, seed=8).eval()(f).bottleneck
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# -- quantisation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_quantisation_to_k_bits_has_at_most_2_to_the_k_levels(bits: int) -> None:
    f = _features()
    q = FeatureQuantiser(bits)
    out = q(f)
    for a, b in zip([f.bottleneck, *f.skips], [out.bottleneck, *out.skips]):
        for i in range(a.shape[0]):
            levels = torch.unique(b[i])
            assert len(levels) <= 2**bits
            step = float(a[i].max() - a[i].min()) / (2**bits - 1)
            assert float((b[i] - a[i]).abs().max()) <= step / 2 + 1e-5
    # 4 bits on this data uses all 16 levels (the bound is reached, not just respected)
    if bits == 4:
        assert len(torch.unique(out.skips[0][0])) == 16


def test_quantisation_passes_the_gradient_straight_through() -> None:
    x = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    FeatureQuantiser(2).quantise(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_defended_segmenter_feeds_the_perturbed_features_to_its_decoder_and_the_attacker() -> None:
    torch.manual_seed(0)
    model = build_segmenter("unet", SMALL, n_classes=3).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    defended = DefendedSegmenter(model, FeatureQuantiser(1)).eval()
    taps = ExposedTapper(defended)(x)
    assert all(len(torch.unique(t)) <= 2 for t in taps)  # the attacker sees 1-bit features
    with torch.no_grad():
        expected = model.decode(FeatureQuantiser(1)(model.encode(x)))
        assert torch.allclose(defended(x), expected)  # the victim's own output pays too
        assert not torch.allclose(defended(x), model(x))


# -- distance correlation -------------------------------------------------------------------------------
def _dcor_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Székely's alternative form dCov² = S1 + S2 - 2 S3 (independent of the code under test)."""
    ax = np.abs(x[:, None] - x[None, :]) if x.ndim == 1 else np.linalg.norm(x[:, None] - x[None], axis=-1)
    by = np.abs(y[:, None] - y[None, :]) if y.ndim == 1 else np.linalg.norm(y[:, None] - y[None], axis=-1)

    def dcov2(a: np.ndarray, b: np.ndarray) -> float:
        s1 = (a * b).mean()
        s2 = a.mean() * b.mean()
        s3 = (a.mean(axis=1) * b.mean(axis=1)).mean()
        return s1 + s2 - 2 * s3

    return float(np.sqrt(dcov2(ax, by) / np.sqrt(dcov2(ax, ax) * dcov2(by, by))))


def test_dcor_of_identical_and_linearly_related_inputs_is_one() -> None:
    x = torch.randn(200, 3)
    assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-4)
    assert float(distance_correlation(x, -2.5 * x + 7.0)) == pytest.approx(1.0, abs=1e-4)


def test_dcor_of_independent_inputs_is_near_zero() -> None:
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(1000, 2, generator=g), torch.randn(1000, 4, generator=g)
    assert float(distance_correlation(x, z)) < 0.1


def test_dcor_matches_the_textbook_formula_on_a_nonlinear_pair() -> None:
    x = np.linspace(-1, 1, 41)
    y = x**2  # uncorrelated (Pearson 0) but dependent
    ours = float(distance_correlation(torch.tensor(x)[:, None], torch.tensor(y)[:, None]))
    assert abs(np.corrcoef(x, y)[0, 1]) < 1e-12
    assert ours == pytest.approx(_dcor_reference(x, y), abs=1e-5)
    assert 0.3 < ours < 0.7


def test_patch_pairs_pair_each_feature_position_with_its_input_patch() -> None:
    image = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 8, 8, 8)
    feature = torch.randn(3, 4, 4, 4)
    rng = np.random.default_rng(0)
    patches, feats = patch_pairs(image, feature, positions=10, rng=rng)
    assert patches.shape == (10, 8) and feats.shape == (10, 3)
    idx = np.random.default_rng(0).choice(64, size=10, replace=False)
    for row, flat in enumerate(idx):
        i, j, k = np.unravel_index(flat, (4, 4, 4))
        block = image[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 2 * k : 2 * k + 2].reshape(-1)
        assert torch.equal(patches[row], block)
        assert torch.equal(feats[row], feature[:, i, j, k])


def test_nopeek_penalty_is_high_for_a_copy_and_low_for_unrelated_features() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 1, 16, 16, 16, generator=g)
    copy = images.repeat(1, 4, 1, 1, 1)
    unrelated = torch.randn(2, 4, 16, 16, 16, generator=g)
    rng = np.random.default_rng(0)
    assert float(nopeek_penalty(images, [copy], 300, rng)) == pytest.approx(1.0, abs=1e-3)
    assert float(nopeek_penalty(images, [unrelated], 300, rng)) < 0.2


# -- expose less --------------------------------------------------------------------------------------------
def test_unet_without_level0_skip_exposes_none_and_trains(tmp_path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 16), dtype=np.float32) for _ in range(2)]
    labels = [(im > 0.5).astype(np.int64) for im in images]
    torch.manual_seed(0)
    trained, deployed, _ = train_defended_victim(
        "unet", SMALL, 2, DefenceSpec("expose_less", 1), images, labels,
        TrainConfig(steps=6, batch_size=2, checkpoint_every=3, lr=0.01), "cpu", progress=False,
        curve_path=tmp_path / "curve.csv",
    )  # fmt: skip
    assert trained is deployed and trained.drop_levels == 1
    # level 0 has no skip: its decoder block sees only the up-sampled channels
    assert trained.decoder[0][0].conv.in_channels == trained.channels[0]
    assert trained.decoder[1][0].conv.in_channels == 2 * trained.channels[1]
    x = torch.from_numpy(images[0][None, None])
    tapper = ExposedTapper(trained)
    taps = tapper(x)
    assert tapper.names == ["bottleneck", "skip1"]
    assert all(t.shape[2:] != x.shape[2:] for t in taps)  # nothing at full resolution
    # the output does not depend on the level-0 encoder features except through pooling
    f = trained.encode(x)
    assert len(f.skips) == 1 and f.skips[0].shape[2:] == (8, 8, 8)
    losses = [float(line.split(",")[1]) for line in (tmp_path / "curve.csv").read_text().splitlines()[1:]]
    assert len(losses) == 6 and all(np.isfinite(losses))
    # saved and reloaded with its architecture
    save_segmenter(tmp_path / "seg", trained)
    loaded, _ = load_segmenter(tmp_path / "seg")
    assert loaded.drop_levels == 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), trained(x), atol=1e-6)


def test_segnet_without_level0_indices_unpools_by_transposed_convolution() -> None:
    torch.manual_seed(0)
    model = build_segmenter("segnet", SMALL, n_classes=3, drop_levels=1).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    f = model.encode(x)
    assert f.indices is not None and len(f.indices) == 1 and f.indices[0].shape[2:] == (4, 4, 4)
    assert ExposedTapper(model).names == ["bottleneck", "indices1"]
    assert model(x).shape == (1, 3, 16, 16, 16)
    standard = build_segmenter("segnet", SMALL, n_classes=3)
    assert len(standard.encode(x).indices) == 2 and "drop_levels" not in standard.spec()


def test_expose_less_beyond_the_levels_is_refused() -> None:
    with pytest.raises(ConfigError, match="drop_levels"):
        build_segmenter("unet", SMALL, n_classes=2, drop_levels=3)


# -- DP-SGD ----------------------------------------------------------------------------------------------
def test_dp_sgd_refuses_batch_norm_with_a_clear_error() -> None:
    from napari_invert.defences.dp import check_dp_compatible

    with pytest.raises(ConfigError, match=r"norm: batch.*instance or none"):
        check_dp_compatible(build_segmenter("unet", SMALL.model_copy(update={"norm": "batch"}), 2))
    check_dp_compatible(build_segmenter("unet", SMALL, 2))  # instance norm: accepted


def test_dp_sgd_trains_a_conv3d_unet_and_reports_epsilon() -> None:
    from napari_invert.defences.dp import dp_epsilon

    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 16), dtype=np.float32) for _ in range(4)]
    labels = [(im > 0.5).astype(np.int64) for im in images]
    torch.manual_seed(0)
    before = build_segmenter("unet", SMALL, 2).state_dict()
    torch.manual_seed(0)
    trained, _, info = train_defended_victim(
        "unet", SMALL, 2, DefenceSpec("dp_sgd", 1.0, {"max_grad_norm": 1.0, "delta": 1e-5}), images, labels,
        TrainConfig(steps=2, batch_size=2, augment=False), "cpu", progress=False,
    )  # fmt: skip
    changed = [k for k, v in trained.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the weights moved
    assert info["epsilon"] == pytest.approx(dp_epsilon(1.0, 0.5, 2, 1e-5))
    # more noise, fewer steps or a smaller sample rate all mean a smaller epsilon
    assert dp_epsilon(2.0, 0.5, 2, 1e-5) < info["epsilon"] < dp_epsilon(1.0, 0.5, 20, 1e-5)
    assert dp_epsilon(1.0, 0.1, 2, 1e-5) < info["epsilon"]


# -- config and specs -------------------------------------------------------------------------------
def _study(defences: list) -> dict:
    return {"cohort": {"kind": "demo"}, "defences": defences}


def test_defences_config_is_validated_by_kind() -> None:
    cfg = parse_config(
        _study([{"kind": "noise", "strengths": [0.5, 1]}, {"kind": "quantise", "strengths": [2]}])
    )
    assert [s.slug for s in expand_defences(cfg.defences)] == ["noise-0.5", "noise-1", "quantise-2"]
    with pytest.raises(ConfigError, match=r"defences\.0"):
        parse_config(_study([{"kind": "blur", "strengths": [1]}]))
    with pytest.raises(ConfigError, match=r"defences\.0\.quantise\.strengths"):
        parse_config(_study([{"kind": "quantise", "strengths": [0]}]))
    with pytest.raises(ConfigError, match=r"defences\.0\.noise\.sigma"):
        parse_config(_study([{"kind": "noise", "strengths": [1], "sigma": 2}]))
    dup = parse_config(_study([{"kind": "noise", "strengths": [1]}, {"kind": "noise", "strengths": [1.0]}]))
    with pytest.raises(ConfigError, match="noise-1"):
        expand_defences(dup.defences)


def test_sample_defence_configs_have_three_defences_at_three_strengths() -> None:
    from pathlib import Path

    from napari_invert.config import load_config

    root = Path(__file__).resolve().parent.parent / "sample_configs"
    cpu = load_config(root / "defences_cpu.yaml")
    gpu = load_config(root / "defences_gpu.yaml")
    assert cpu.cohort.kind == "lpba40" and cpu.preprocess.voxel_mm == 4.0
    assert sum(len(d.strengths) >= 3 for d in cpu.defences) >= 3
    assert gpu.preprocess.voxel_mm == 1.0 and gpu.device == "cuda"
    assert {d.kind for d in gpu.defences} == {
        "expose_less", "noise", "quantise", "nopeek", "adversarial", "dp_sgd"
    }  # fmt: skip
    for cfg in (cpu, gpu):
        for d in cfg.defences:
            if d.kind == "expose_less":
                assert max(d.strengths) <= cfg.segmenter.levels


# -- Pareto front ----------------------------------------------------------------------------------------
def test_pareto_front_on_hand_made_points() -> None:
    # (utility, leakage): higher utility and lower leakage are better
    points = [(0.80, 0.90), (0.78, 0.40), (0.70, 0.10), (0.60, 0.50), (0.78, 0.45), (0.50, 0.10)]
    on = pareto_front([p[0] for p in points], [p[1] for p in points])
    assert on.tolist() == [True, True, True, False, False, False]
    # a NaN coordinate is never on the front; ties are not domination
    on = pareto_front([0.5, 0.5, float("nan")], [0.2, 0.2, 0.0])
    assert on.tolist() == [True, True, False]
    for u, lk in itertools.product([0.1], [0.3]):
        assert pareto_front([u], [lk]).tolist() == [True]


def test_defence_training_loop_augments_and_scores_like_the_reference_trainer() -> None:
    """The loop every trained-through defence uses (noise, nopeek, adversarial, DP-SGD) flips
    image and labels together along ``flip_axes`` and uses ``segmentation_loss`` from the
    config, as ``train_segmenter`` does for the undefended reference."""
    from monai.losses import DiceFocalLoss

    from napari_invert.defences.training import VictimTraining

    # one subject whose label is the left half (x < 4) and whose image is 1 there
    image = np.zeros((8, 8, 8), np.float32)
    image[:4] = 1.0
    label = (image > 0).astype(np.int64)
    config = TrainConfig(
        steps=12, batch_size=1, lr=1e-3, augment=True, flip_axes=[0], segmentation_loss="dice_focal"
    )
    model = build_segmenter("unet", SegmenterConfig(base_filters=2, levels=1), n_classes=2)
    run = VictimTraining(
        [image], [label], config, torch.device("cpu"), {"kind": "test"}, "test", progress=False
    )
    seen: list[tuple[bool, bool]] = []

    def record(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        left_image = bool(x[0, 0, :4].mean() > x[0, 0, 4:].mean())  # intensity jitter keeps the order
        left_label = bool(y[0, 0, :4].float().mean() > y[0, 0, 4:].float().mean())
        seen.append((left_image, left_label))
        return (model(x) * 0).sum()

    run.loop(model, model, run.adam(model.parameters()), record)
    assert len(seen) == 12
    assert all(a == b for a, b in seen)  # image and labels flipped together
    assert {a for a, _ in seen} == {True, False}  # and some batches were flipped
    loss = run.segmentation_loss()
    logits = torch.randn(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.as_tensor(label)[None, None]
    expected = DiceFocalLoss(softmax=True, to_onehot_y=True, batch=True)(logits, target)
    assert float(loss(logits, target)) == pytest.approx(float(expected), rel=1e-5)
