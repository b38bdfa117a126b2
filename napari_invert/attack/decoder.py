"""The attacker's inversion decoder ``X̂ = D̂(taps)`` (paper section 3.2, Figure 3).

The decoder is built from the *shapes* of the tapped tensors, so it works for every tap
option of our segmenters and for generic :class:`~napari_invert.attack.HookTapper` outputs:

1. Tapped tensors are grouped by spatial size; the sizes plus the output size, sorted
   from coarse to fine, form a resolution *ladder*. Missing rungs are filled in by
   factors of 2 (or 3) so that upsampling goes level by level, mirroring the encoder
   (e.g. a bottleneck-only tap of a 4-level network is decoded in 4 upsampling steps).
2. The float tensors at the coarsest rung are concatenated and passed through a conv block.
3. Each step to the next finer rung (a) upsamples the current features with a
   transposed convolution (kernel = stride = size ratio; trilinear interpolation plus a
   1^3 conv when the ratio is not an integer), (b) for every tapped pooling-index tensor
   at the coarser rung, projects the features to that tensor's channel count and
   *max-unpools them with the tapped indices* (``max_unpool3d``), i.e. writes every value
   at the exact voxel where the victim's encoder found its maximum, as SegNet's own
   decoder does — this is how pooling indices leak spatial detail, and (c) concatenates
   these with every tapped float tensor of the finer rung (e.g. U-Net skips), then
   applies a conv block.
4. A final ``1^3`` convolution gives one output channel: ``(B, 1, X, Y, Z)`` float32 in
   the intensity units of the training images (no output activation).

Channels: the finest rung has ``base_filters``, doubling per coarser rung, capped at
``max_filters``. Conv blocks are ``convs_per_level`` x (conv k^3 -> instance norm -> ReLU).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, UpSample
from torch import Tensor, nn

from napari_invert.attack.taps import Tapper
from napari_invert.checkpoint import load_module_checkpoint, load_module_state, save_checkpoint
from napari_invert.errors import CheckpointError
from napari_invert.models.base import conv_block

Size3 = tuple[int, int, int]


@dataclass(frozen=True)
class TapInput:
    """Shape description of one tapped tensor (batch dimension excluded).

    ``is_index``: the tensor holds max-pooling argmax positions (integer dtype) that refer
    to the grid of the next finer ladder rung.
    """

    name: str
    channels: int
    spatial: Size3
    is_index: bool = False

    @classmethod
    def from_tensor(cls, name: str, t: Tensor) -> TapInput:
        if t.ndim != 5:
            raise ValueError(f"tapped tensor '{name}' must be (B, C, X, Y, Z), got {tuple(t.shape)}")
        return cls(
            name=name,
            channels=int(t.shape[1]),
            spatial=tuple(int(s) for s in t.shape[2:]),  # type: ignore[arg-type]
            is_index=not (t.is_floating_point() or t.is_complex()),
        )


def build_ladder(sizes: Sequence[Size3], output_size: Size3) -> list[Size3]:
    """Coarse-to-fine list of spatial sizes containing ``sizes`` and ``output_size``,
    with intermediate rungs inserted by factors 2 (or 3) per dimension.

    Raises ``ValueError`` when the sizes do not form a pyramid (some tensor larger than the
    output, or two sizes that are not ordered in every dimension).
    """
    output_size = tuple(int(s) for s in output_size)  # type: ignore[assignment]
    uniq = sorted({tuple(int(v) for v in s) for s in sizes} | {output_size}, key=lambda s: (math.prod(s), s))
    for a, b in itertools.pairwise(uniq):
        if any(x > y for x, y in zip(a, b)):
            raise ValueError(f"tapped spatial sizes {uniq} do not form a coarse-to-fine pyramid ({a} vs {b})")
    if uniq[-1] != output_size:
        raise ValueError(f"a tapped tensor ({uniq[-1]}) is larger than the output size {output_size}")
    ladder: list[Size3] = [uniq[0]]  # type: ignore[list-item]
    for nxt in uniq[1:]:
        cur = ladder[-1]
        while True:
            cand = cur
            for f in (2, 3):
                cand = tuple(  # type: ignore[assignment]
                    c * f if (n % (c * f) == 0 and c * f < n) else c for c, n in zip(cur, nxt)
                )
                if cand != cur:
                    break
            if cand == cur:
                break
            ladder.append(cand)
            cur = cand
        ladder.append(nxt)  # type: ignore[arg-type]
    return ladder


class _Resize(nn.Module):
    """Trilinear resize to a fixed size followed by a 1^3 conv (non-integer ratios)."""

    def __init__(self, in_channels: int, out_channels: int, size: Size3) -> None:
        super().__init__()
        self.size = tuple(size)
        self.conv = Convolution(3, in_channels, out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, size=self.size, mode="trilinear", align_corners=False))


def _ratio(coarse: Size3, fine: Size3) -> tuple[int, int, int] | None:
    if all(f % c == 0 for c, f in zip(coarse, fine)):
        return tuple(f // c for c, f in zip(coarse, fine))  # type: ignore[return-value]
    return None


class InversionDecoder(nn.Module):
    """Reconstruct the input image from tapped tensors (see the module docstring).

    Parameters
    ----------
    inputs
        One :class:`TapInput` (or its dict) per tapped tensor, in the tapper's order.
    output_size
        ``(X, Y, Z)`` of the reconstructed image.
    base_filters, max_filters, convs_per_level, kernel_size, norm
        Width and depth of the conv blocks (``norm``: ``instance``, ``batch`` or ``none``).
    """

    def __init__(
        self,
        inputs: Sequence[TapInput | dict[str, Any]],
        output_size: Sequence[int],
        base_filters: int = 16,
        max_filters: int = 256,
        convs_per_level: int = 2,
        kernel_size: int = 3,
        norm: str = "instance",
        tapper_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.inputs = [
            i
            if isinstance(i, TapInput)
            else TapInput(i["name"], int(i["channels"]), tuple(i["spatial"]), bool(i["is_index"]))  # type: ignore[arg-type]
            for i in inputs
        ]
        if not self.inputs:
            raise ValueError("InversionDecoder needs at least one tapped tensor")
        self.output_size: Size3 = tuple(int(s) for s in output_size)  # type: ignore[assignment]
        if len(self.output_size) != 3:
            raise ValueError(f"output_size must be (X, Y, Z), got {self.output_size}")
        self.hparams = {
            "base_filters": int(base_filters),
            "max_filters": int(max_filters),
            "convs_per_level": int(convs_per_level),
            "kernel_size": int(kernel_size),
            "norm": norm,
        }
        self.tapper_spec = dict(tapper_spec or {})
        self.ladder = build_ladder([i.spatial for i in self.inputs], self.output_size)
        K = len(self.ladder)
        rung = {s: k for k, s in enumerate(self.ladder)}
        self.channels = [min(base_filters * 2 ** (K - 1 - k), max_filters) for k in range(K)]
        self.feats_at: list[list[int]] = [[] for _ in range(K)]
        self.index_at: list[list[int]] = [[] for _ in range(K)]
        for j, inp in enumerate(self.inputs):
            (self.index_at if inp.is_index else self.feats_at)[rung[inp.spatial]].append(j)
        starts = [k for k in range(K) if self.feats_at[k]]
        if not starts:
            raise ValueError("InversionDecoder needs at least one floating-point tapped tensor")
        self.start = starts[0]
        if any(self.index_at[k] for k in range(self.start)) or self.index_at[K - 1]:
            raise ValueError(
                "pooling indices must lie between the coarsest feature map and the output "
                "resolution (they are unpooled into the next finer level)"
            )
        k_, n_ = kernel_size, convs_per_level
        ch = self.channels
        in0 = sum(self.inputs[j].channels for j in self.feats_at[self.start])
        self.stem = conv_block(in0, ch[self.start], n_, k_, norm)
        self.up = nn.ModuleDict()
        self.unpool_proj = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        self.ratios: dict[int, tuple[int, int, int] | None] = {}
        for k in range(self.start + 1, K):
            coarse, fine = self.ladder[k - 1], self.ladder[k]
            r = _ratio(coarse, fine)
            self.ratios[k] = r
            if r is not None:
                self.up[str(k)] = UpSample(3, ch[k - 1], ch[k], scale_factor=r, mode="deconv")
            else:
                self.up[str(k)] = _Resize(ch[k - 1], ch[k], fine)
            projs = nn.ModuleList()
            for j in self.index_at[k - 1]:
                if r is None:
                    raise ValueError(
                        f"pooling indices '{self.inputs[j].name}' at {coarse} cannot be unpooled "
                        f"to {fine} (not an integer ratio)"
                    )
                projs.append(
                    Convolution(3, ch[k - 1], self.inputs[j].channels, kernel_size=1, conv_only=True)
                )
            self.unpool_proj[str(k)] = projs
            cin = (
                ch[k]
                + sum(self.inputs[j].channels for j in self.index_at[k - 1])
                + sum(self.inputs[j].channels for j in self.feats_at[k])
            )
            self.blocks[str(k)] = conv_block(cin, ch[k], n_, k_, norm)
        self.head = Convolution(3, ch[K - 1], 1, kernel_size=1, conv_only=True)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def for_tapper(
        cls,
        tapper: Tapper,
        sample_input: Tensor | np.ndarray,
        base_filters: int = 16,
        **kwargs: Any,
    ) -> InversionDecoder:
        """Build a decoder that fits ``tapper``'s outputs for inputs shaped like ``sample_input``
        (``(B, C, X, Y, Z)`` tensor or ``(X, Y, Z)`` array); extra kwargs go to ``__init__``."""
        x = torch.as_tensor(sample_input, dtype=torch.float32)
        if x.ndim == 3:
            x = x[None, None]
        if x.ndim != 5:
            raise ValueError(f"sample_input must be (X, Y, Z) or (B, C, X, Y, Z), got {tuple(x.shape)}")
        taps = tapper(x[:1].to(tapper.device))
        inputs = [TapInput.from_tensor(n, t) for n, t in zip(tapper.names, taps)]
        return cls(inputs, tuple(x.shape[2:]), base_filters=base_filters, tapper_spec=tapper.spec(), **kwargs)

    def spec(self) -> dict[str, Any]:
        """JSON description from which :meth:`from_spec` rebuilds an identical decoder."""
        return {
            "inputs": [{**asdict(i), "spatial": list(i.spatial)} for i in self.inputs],
            "output_size": list(self.output_size),
            **self.hparams,
            "tapper": self.tapper_spec,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> InversionDecoder:
        """Inverse of :meth:`spec` (weights are freshly initialised)."""
        hp = {k: spec[k] for k in ("base_filters", "max_filters", "convs_per_level", "kernel_size", "norm")}
        return cls(spec["inputs"], spec["output_size"], tapper_spec=spec.get("tapper"), **hp)

    # -- forward -------------------------------------------------------------------------
    def check_taps(self, taps: Sequence[Tensor]) -> None:
        """Raise ``ValueError`` when ``taps`` do not match the shapes the decoder was built for."""
        if len(taps) != len(self.inputs):
            raise ValueError(f"decoder expects {len(self.inputs)} tapped tensors, got {len(taps)}")
        for t, inp in zip(taps, self.inputs):
            if int(t.shape[1]) != inp.channels or tuple(int(s) for s in t.shape[2:]) != inp.spatial:
                raise ValueError(
                    f"tapped tensor '{inp.name}' has shape {tuple(t.shape)}, decoder expects "
                    f"(B, {inp.channels}, {', '.join(map(str, inp.spatial))})"
                )

    def forward(self, taps: Sequence[Tensor]) -> Tensor:
        """``taps`` (tapper order) -> reconstruction ``(B, 1, X, Y, Z)``."""
        self.check_taps(taps)
        h = self.stem(torch.cat([taps[j] for j in self.feats_at[self.start]], dim=1))
        for k in range(self.start + 1, len(self.ladder)):
            parts = [self.up[str(k)](h)]
            r = self.ratios[k]
            for j, proj in zip(self.index_at[k - 1], self.unpool_proj[str(k)]):
                idx = taps[j]
                idx = idx if idx.dtype == torch.int64 else idx.long()
                v = proj(h)
                parts.append(
                    F.max_unpool3d(v, idx.to(v.device), kernel_size=r, stride=r, output_size=self.ladder[k])
                )
            parts.extend(taps[j].to(parts[0].dtype) for j in self.feats_at[k])
            h = self.blocks[str(k)](torch.cat(parts, dim=1))
        return self.head(h)

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


# -- persistence ---------------------------------------------------------------------------

RESERVED_META = ("kind", "decoder", "format_version")


def save_decoder(stem: str | Path, decoder: InversionDecoder, meta: dict[str, Any] | None = None) -> Path:
    """Save as ``stem.safetensors`` + ``stem.json`` (``{"kind": "inversion_decoder",
    "decoder": spec, ...meta}``); returns the JSON path."""
    extra = {k: v for k, v in (meta or {}).items() if k not in RESERVED_META}
    _, meta_path = save_checkpoint(
        stem, dict(decoder.state_dict()), {**extra, "kind": "inversion_decoder", "decoder": decoder.spec()}
    )
    return meta_path


def load_decoder(
    stem: str | Path, device: str | torch.device = "cpu"
) -> tuple[InversionDecoder, dict[str, Any]]:
    """Load a decoder saved by :func:`save_decoder` (or a decoder training checkpoint).

    Returns ``(decoder in eval mode on device, meta)``; raises
    :class:`~napari_invert.errors.CheckpointError` naming the file on any problem.
    """
    tensors, meta, spec, source = load_module_checkpoint(stem, "inversion_decoder", "an inversion-decoder")
    try:
        decoder = InversionDecoder.from_spec(spec["decoder"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot rebuild the decoder from its description ({exc})") from None
    load_module_state(decoder, tensors, source)
    decoder.to(device)
    decoder.eval()
    return decoder, meta
