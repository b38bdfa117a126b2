"""Shared pieces of the victim segmenters: the encoder-output record and building blocks.

Conventions (all segmenters):

* input ``x``: ``(B, in_channels, X, Y, Z)`` float32, spatial sizes divisible by
  ``pool_size ** levels``;
* level ``l`` (0 = full resolution) has ``channels[l] = min(base_filters * 2**l,
  max_filters)`` feature maps at spatial size ``(X, Y, Z) / pool_size**l``;
* the bottleneck is the conv block after the last pooling, at level ``levels``;
* output: logits ``(B, n_classes, X, Y, Z)`` (softmax is applied by the loss / predict).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import Tensor, nn

from napari_invert.config import SegmenterConfig
from napari_invert.errors import ConfigError


@dataclass
class EncoderFeatures:
    """Everything a segmenter's encoder produces, i.e. everything its decoder may use.

    Attributes
    ----------
    skips
        U-Net: the conv-block outputs before each pooling, level 0 (full resolution)
        first; ``skips[l]`` is ``(B, channels[l], X/p**l, Y/p**l, Z/p**l)``.
        SegNet: empty (SegNet's decoder has no skip connections).
    bottleneck
        ``(B, channels[levels], X/p**levels, ...)`` float: the latent representation.
    indices
        SegNet only: max-pooling argmax positions, ``indices[l]`` is int64
        ``(B, channels[l], X/p**(l+1), ...)`` holding flat positions in the level-``l``
        grid (as returned by ``max_pool3d(..., return_indices=True)``). ``None`` for U-Net.
    """

    skips: list[Tensor]
    bottleneck: Tensor
    indices: list[Tensor] | None = None


def level_channels(config: SegmenterConfig) -> list[int]:
    """Feature maps per level ``0..levels`` (bottleneck last): doubling, capped."""
    return [min(config.base_filters * 2**level, config.max_filters) for level in range(config.levels + 1)]


def norm_spec(norm: str) -> tuple[str, dict[str, Any]] | str | None:
    """MONAI norm argument for a config value (``instance`` has learnable affine)."""
    if norm == "instance":
        return ("INSTANCE", {"affine": True})
    if norm == "batch":
        return "BATCH"
    if norm == "none":
        return None
    raise ConfigError(f"segmenter.norm: unknown normalisation '{norm}'")


def conv_layer(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    norm: str,
    dropout: float = 0.0,
) -> Convolution:
    """One ``conv (k^3, same padding) -> norm -> dropout -> ReLU`` layer (MONAI Convolution)."""
    return Convolution(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel_size,
        act="RELU",
        norm=norm_spec(norm),
        dropout=dropout if dropout > 0 else None,
        adn_ordering="NDA",
    )


def conv_block(
    in_channels: int,
    out_channels: int,
    n_convs: int,
    kernel_size: int,
    norm: str,
    dropout: float = 0.0,
    last_channels: int | None = None,
) -> nn.Sequential:
    """``n_convs`` conv layers; the first maps ``in_channels`` and the last outputs
    ``last_channels`` (default ``out_channels``)."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        cin = in_channels if i == 0 else out_channels
        cout = last_channels if (i == n_convs - 1 and last_channels is not None) else out_channels
        layers.append(conv_layer(cin, cout, kernel_size, norm, dropout))
    return nn.Sequential(*layers)


def check_config(config: SegmenterConfig) -> None:
    """Reject configurations the networks cannot realise (even kernels break same padding)."""
    if config.kernel_size % 2 == 0:
        raise ConfigError(
            f"segmenter.kernel_size: must be odd for size-preserving convolutions, got {config.kernel_size}"
        )


def check_drop_levels(drop_levels: int, levels: int) -> int:
    """Validate the number of lowest levels without skips / pooling indices (0..levels)."""
    if not 0 <= int(drop_levels) <= levels:
        raise ConfigError(f"drop_levels: must lie in 0..{levels} (the number of levels), got {drop_levels}")
    return int(drop_levels)


class Segmenter(nn.Module):
    """Base class of the victim networks: ``forward(x) = decode(encode(x))``.

    Subclasses set ``arch`` and implement :meth:`encode` and :meth:`decode`.
    """

    arch: str = ""

    def __init__(self, config: SegmenterConfig, n_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        config = config.for_architecture(self.arch)
        check_config(config)
        if n_classes < 2:
            raise ConfigError(f"n_classes: need at least 2 classes (background + 1), got {n_classes}")
        if in_channels < 1:
            raise ConfigError(f"in_channels: must be >= 1, got {in_channels}")
        self.config = config.model_copy(deep=True)
        self.n_classes = int(n_classes)
        self.in_channels = int(in_channels)
        self.levels = config.levels
        self.pool_size = config.pool_size
        self.channels = level_channels(config)

    def block_settings(self) -> tuple[list[int], int, int, str, float]:
        """``(channels per level, kernel size, convs per level, norm, dropout)`` the
        subclasses build their blocks from: this network's settings, ``per_architecture``
        applied (never the caller's config)."""
        c = self.config
        return self.channels, c.kernel_size, c.convs_per_level, c.norm, c.dropout

    # -- contract ---------------------------------------------------------------------
    def encode(self, x: Tensor) -> EncoderFeatures:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, features: EncoderFeatures) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, n_classes, X, Y, Z)`` for input ``(B, in_channels, X, Y, Z)``."""
        return self.decode(self.encode(x))

    # -- helpers ----------------------------------------------------------------------
    @property
    def multiple_of(self) -> int:
        """Spatial sizes must be divisible by this (``pool_size ** levels``)."""
        return self.pool_size**self.levels

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` with the reason when ``x`` cannot be segmented."""
        if x.ndim != 5:
            raise ValueError(f"{self.arch}: expected input (B, C, X, Y, Z), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self.arch}: expected {self.in_channels} input channel(s), got {x.shape[1]}")
        m = self.multiple_of
        bad = [int(s) for s in x.shape[2:] if s % m]
        if bad:
            raise ValueError(
                f"{self.arch}: spatial size {tuple(x.shape[2:])} is not divisible by "
                f"pool_size**levels = {m} (crop/pad the volume to a multiple of {m})"
            )

    def spec(self) -> dict[str, Any]:
        """JSON description from which :func:`~napari_invert.models.build_segmenter` rebuilds
        an identical (untrained) network."""
        return {
            "arch": self.arch,
            # per_architecture is already applied (and empty): left out, so descriptions
            # written before it existed still match
            "segmenter_config": self.config.model_dump(mode="json", exclude={"per_architecture"}),
            "n_classes": self.n_classes,
            "in_channels": self.in_channels,
        }

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def spatial_shape(t: torch.Tensor) -> tuple[int, ...]:
    """Spatial part ``(X, Y, Z)`` of a ``(B, C, X, Y, Z)`` tensor."""
    return tuple(int(s) for s in t.shape[2:])
