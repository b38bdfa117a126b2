"""3D U-Net victim (Ronneberger et al.; paper section 3.1, Figure 1).

Contracting path: per level ``convs_per_level`` x (conv k^3 -> norm -> ReLU), then a
``p^3`` max-pooling; a bottleneck conv block at the deepest level. Expanding path: per
level a transposed convolution (kernel = stride = ``p``) halving the channels, then
concatenation with the encoder's skip features of that level and a conv block. A
``1^3`` convolution gives the class logits (the softmax classifier lives in the loss and
in :func:`~napari_invert.models.predict`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from torch import Tensor, nn

from napari_invert.config import SegmenterConfig
from napari_invert.models.base import EncoderFeatures, Segmenter, check_drop_levels, conv_block


class UNet3D(Segmenter):
    """3D U-Net with skip connections. See :class:`~napari_invert.models.base.Segmenter`.

    ``drop_levels`` (default 0: the standard U-Net): levels ``0..drop_levels-1`` have NO
    skip connection (the "expose less" defence, :mod:`napari_invert.defences`): their
    decoder block sees only the up-sampled coarser features, and :meth:`encode` returns
    ``skips`` for levels ``drop_levels..levels-1`` only (``skips[i]`` is level
    ``i + drop_levels``), so nothing at those resolutions is exposed.
    """

    arch = "unet"

    def __init__(
        self, config: SegmenterConfig, n_classes: int, in_channels: int = 1, drop_levels: int = 0
    ) -> None:
        super().__init__(config, n_classes, in_channels)
        self.drop_levels = check_drop_levels(drop_levels, self.levels)
        ch, k, n, norm, drop = self.block_settings()
        self.encoder = nn.ModuleList(
            conv_block(in_channels if lvl == 0 else ch[lvl - 1], ch[lvl], n, k, norm, drop)
            for lvl in range(self.levels)
        )
        self.bottleneck = conv_block(ch[self.levels - 1], ch[self.levels], n, k, norm, drop)
        # decoder[l] brings level l+1 back to level l
        self.upsample = nn.ModuleList(
            UpSample(
                spatial_dims=3,
                in_channels=ch[lvl + 1],
                out_channels=ch[lvl],
                scale_factor=self.pool_size,
                mode="deconv",
            )
            for lvl in range(self.levels)
        )
        self.decoder = nn.ModuleList(
            conv_block((1 if lvl < self.drop_levels else 2) * ch[lvl], ch[lvl], n, k, norm, drop)
            for lvl in range(self.levels)
        )
        self.head = Convolution(3, ch[0], n_classes, kernel_size=1, conv_only=True)

    def encode(self, x: Tensor) -> EncoderFeatures:
        """Contracting path. Returns the skip features of every level and the bottleneck."""
        self.check_input(x)
        skips: list[Tensor] = []
        h = x
        for lvl, block in enumerate(self.encoder):
            h = block(h)
            if lvl >= self.drop_levels:
                skips.append(h)
            h = F.max_pool3d(h, kernel_size=self.pool_size, stride=self.pool_size)
        return EncoderFeatures(skips=skips, bottleneck=self.bottleneck(h), indices=None)

    def decode(self, features: EncoderFeatures) -> Tensor:
        """Expanding path: up-convolution, concatenation with ``skips[l]``, conv block."""
        n_skips = self.levels - self.drop_levels
        if len(features.skips) != n_skips:
            raise ValueError(f"unet: decode needs {n_skips} skip feature maps, got {len(features.skips)}")
        h = features.bottleneck
        for lvl in reversed(range(self.levels)):
            h = self.upsample[lvl](h)
            if lvl >= self.drop_levels:
                h = torch.cat([h, features.skips[lvl - self.drop_levels]], dim=1)
            h = self.decoder[lvl](h)
        return self.head(h)

    def spec(self) -> dict[str, Any]:
        """As :meth:`Segmenter.spec`; ``drop_levels`` is recorded only when non-zero."""
        spec = super().spec()
        if self.drop_levels:
            spec["drop_levels"] = self.drop_levels
        return spec
