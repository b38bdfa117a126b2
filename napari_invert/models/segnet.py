"""3D SegNet victim (Badrinarayanan et al.; paper section 3.1, Figure 2).

VGG-style encoder: per level ``convs_per_level`` x (conv k^3 -> norm -> ReLU) and a
``p^3`` max-pooling that *remembers the argmax positions* (``return_indices=True``); a
bottleneck conv block at the deepest level. The decoder has NO skip connections: at each
level it max-unpools with the stored indices (placing values back where the maxima were,
zeros elsewhere) and applies a conv block whose last convolution reduces the channels
for the next level. A ``1^3`` convolution gives the class logits.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from torch import Tensor, nn

from napari_invert.config import SegmenterConfig
from napari_invert.models.base import (
    EncoderFeatures,
    Segmenter,
    check_drop_levels,
    conv_block,
    conv_layer,
)


class SegNet3D(Segmenter):
    """3D SegNet (pooling-index unpooling, no skips). See :class:`Segmenter`.

    ``drop_levels`` (default 0: the standard SegNet): levels ``0..drop_levels-1`` keep NO
    pooling indices (the "expose less" defence, :mod:`napari_invert.defences`): their
    decoder up-samples with a learned transposed convolution (kernel = stride = pool size)
    instead of max-unpooling, and :meth:`encode` returns ``indices`` for levels
    ``drop_levels..levels-1`` only (``indices[i]`` is level ``i + drop_levels``).
    """

    arch = "segnet"

    def __init__(
        self, config: SegmenterConfig, n_classes: int, in_channels: int = 1, drop_levels: int = 0
    ) -> None:
        super().__init__(config, n_classes, in_channels)
        self.drop_levels = check_drop_levels(drop_levels, self.levels)
        ch, k, n, norm, drop = self.block_settings()
        L = self.levels
        self.encoder = nn.ModuleList(
            conv_block(in_channels if lvl == 0 else ch[lvl - 1], ch[lvl], n, k, norm, drop)
            for lvl in range(L)
        )
        self.bottleneck = conv_block(ch[L - 1], ch[L], n, k, norm, drop)
        # bring the bottleneck to the channel count of the deepest pooling indices
        self.project = conv_layer(ch[L], ch[L - 1], k, norm, drop)
        # decoder[l]: after unpooling to level l, conv block ending in the channels of level l-1
        self.decoder = nn.ModuleList(
            conv_block(ch[lvl], ch[lvl], n, k, norm, drop, last_channels=ch[max(lvl - 1, 0)])
            for lvl in range(L)
        )
        self.head = Convolution(3, ch[0], n_classes, kernel_size=1, conv_only=True)
        if self.drop_levels:
            # learned up-sampling where the pooling indices are withheld (keys "0".."k-1")
            self.upsample = nn.ModuleDict(
                {
                    str(lvl): UpSample(3, ch[lvl], ch[lvl], scale_factor=self.pool_size, mode="deconv")
                    for lvl in range(self.drop_levels)
                }
            )

    def encode(self, x: Tensor) -> EncoderFeatures:
        """Encoder. Returns the bottleneck and the pooling indices of every level (no skips)."""
        self.check_input(x)
        indices: list[Tensor] = []
        h = x
        for lvl, block in enumerate(self.encoder):
            h = block(h)
            if lvl < self.drop_levels:
                h = F.max_pool3d(h, kernel_size=self.pool_size, stride=self.pool_size)
                continue
            h, idx = F.max_pool3d(h, kernel_size=self.pool_size, stride=self.pool_size, return_indices=True)
            indices.append(idx)
        return EncoderFeatures(skips=[], bottleneck=self.bottleneck(h), indices=indices)

    def decode(self, features: EncoderFeatures) -> Tensor:
        """Decoder from the bottleneck and pooling indices only (skips are ignored)."""
        n_idx = self.levels - self.drop_levels
        if features.indices is None or len(features.indices) != n_idx:
            got = 0 if features.indices is None else len(features.indices)
            raise ValueError(f"segnet: decode needs {n_idx} pooling-index tensors, got {got}")
        h = self.project(features.bottleneck)
        p = self.pool_size
        for lvl in reversed(range(self.levels)):
            if lvl < self.drop_levels:
                h = self.upsample[str(lvl)](h)
            else:
                idx = features.indices[lvl - self.drop_levels]
                out_size = [s * p for s in idx.shape[2:]]
                h = F.max_unpool3d(h, idx, kernel_size=p, stride=p, output_size=out_size)
            h = self.decoder[lvl](h)
        return self.head(h)

    def spec(self) -> dict[str, Any]:
        """As :meth:`Segmenter.spec`; ``drop_levels`` is recorded only when non-zero."""
        spec = super().spec()
        if self.drop_levels:
            spec["drop_levels"] = self.drop_levels
        return spec
