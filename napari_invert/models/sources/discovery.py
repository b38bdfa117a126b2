"""Tap discovery: which internal tensors of a network can an attacker read, and which is which.

One dummy forward pass records every candidate layer's output (5-D float tensors
``(B, C, X, Y, Z)``), in the order the outputs are produced. Each layer gets a *scale*
(input size / output size per axis) and the network is split at the first output that is
finer than one seen before (the decoder starts upsampling). In that encoder part:

* ``bottleneck``: the last output at the coarsest scale, skipping concatenations (an output
  whose channels are the sum of two different earlier channel counts at that scale, e.g. a
  MONAI ``SkipConnection``) and, when the coarsest run starts in one top-level block, layers
  of another top-level block (SegResNet's 1x1 convolution of ``up_samples``);
* ``level0``, ``level1``, ...: per finer scale (finest first), the last encoder output at that
  scale (what a U-Net's skip connections carry), and last, when there is one, a block output at
  the bottleneck's own scale that precedes it (MONAI ``UNet`` concatenates its last down block
  with the bottom block); ``skipN`` is an alias; ``skips`` = all levels.

The heuristics are printed with the layers so a user can always name layers instead.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from napari_invert.errors import ConfigError

ROLE_RE = re.compile(r"^(level|skip)(\d+)$")


@dataclass
class LayerInfo:
    """One candidate layer: ``shape`` ``(C, X, Y, Z)`` of its output for the dummy input,
    ``scale`` per axis (input / output size), ``order`` in the forward pass."""

    name: str
    kind: str
    shape: tuple[int, ...]
    scale: tuple[float, float, float]
    order: int
    roles: list[str] = field(default_factory=list)

    @property
    def coarseness(self) -> float:
        return math.prod(self.scale)


@dataclass
class TapDiscovery:
    """The result of :func:`discover_module` (or the TorchScript equivalent)."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    layers: list[LayerInfo]
    roles: dict[str, str]
    multiple_of: int
    encoder_end: int

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def levels(self) -> list[str]:
        """Layer names of ``level0``, ``level1``, ... (finest first)."""
        out, k = [], 0
        while f"level{k}" in self.roles:
            out.append(self.roles[f"level{k}"])
            k += 1
        return out

    def resolve(self, entry: str, valid_names: list[str] | None = None) -> list[str]:
        """``'bottleneck+skips'``, ``'level0'``, ``'model.0+model.1.submodule.0'`` -> layer
        names. A name that is neither a role nor a layer raises :class:`ConfigError`
        listing the roles and the valid layer names."""
        names = valid_names if valid_names is not None else self.layer_names
        out: list[str] = []
        for part in [p.strip() for p in entry.split("+") if p.strip()]:
            m = ROLE_RE.match(part)
            if part == "skips":
                found = self.levels
                if not found:
                    raise ConfigError(
                        f"tap '{entry}': this network has no encoder levels finer than its bottleneck"
                    )
            elif m:
                key = f"level{m.group(2)}"
                if key not in self.roles:
                    raise ConfigError(f"tap '{entry}': no {part} (levels found: {self.levels_text()})")
                found = [self.roles[key]]
            elif part in self.roles:
                found = [self.roles[part]]
            elif part in names:
                found = [part]
            else:
                shown = ", ".join(names[:200]) + (", ..." if len(names) > 200 else "")
                raise ConfigError(
                    f"tap '{entry}': '{part}' is neither a role ({', '.join(self.role_names())}) "
                    f"nor a layer; valid layers: {shown}"
                )
            out.extend(n for n in found if n not in out)
        if not out:
            raise ConfigError(f"tap '{entry}': names no layer")
        return out

    def role_names(self) -> list[str]:
        return ["bottleneck", "skips", *[r for r in self.roles if r.startswith("level")]]

    def levels_text(self) -> str:
        return ", ".join(f"level{k}={n}" for k, n in enumerate(self.levels)) or "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "multiple_of": self.multiple_of,
            "roles": dict(self.roles),
            "layers": [
                {
                    "name": la.name,
                    "kind": la.kind,
                    "shape": list(la.shape),
                    "scale": [round(s, 3) for s in la.scale],
                    "encoder": la.order < self.encoder_end,
                    "roles": la.roles,
                }
                for la in self.layers
            ],
        }

    def _inner(self, la: LayerInfo) -> bool:
        """A layer inside a later block with the same output shape (hidden in the summary)."""
        return any(
            other.order > la.order and other.shape == la.shape and la.name.startswith(other.name + ".")
            for other in self.layers[la.order + 1 : self.encoder_end]
        )

    def format(self, all_layers: bool = False) -> str:
        """Human-readable table (encoder layers only unless ``all_layers``)."""
        lines = [
            f"dummy input {tuple(self.input_shape)} -> output "
            f"{None if self.output_shape is None else tuple(self.output_shape)}; "
            f"spatial sizes must be multiples of {self.multiple_of}",
            f"{'layer':<48} {'kind':<22} {'output (C, X, Y, Z)':<24} {'scale':<10} roles",
        ]
        for la in self.layers:
            if not all_layers and not la.roles and (la.order >= self.encoder_end or self._inner(la)):
                continue
            scale = "x".join(f"{s:g}" for s in la.scale) if len(set(la.scale)) > 1 else f"1/{la.scale[0]:g}"
            lines.append(
                f"{la.name:<48} {la.kind[:22]:<22} {tuple(la.shape)!s:<24} {scale:<10} {', '.join(la.roles)}"
            )
        lines.append(
            "roles: bottleneck="
            + self.roles.get("bottleneck", "?")
            + "; "
            + self.levels_text()
            + "; 'skips' = all levels. Name taps by role or layer, joined with '+'."
        )
        if not all_layers:
            lines.append("(layers inside a block and decoder layers hidden; --all lists every layer)")
        return "\n".join(lines)


def _scale(in_spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> tuple[float, float, float]:
    return tuple(float(i) / float(o) for i, o in zip(in_spatial, out_spatial))  # type: ignore[return-value]


def build_discovery(
    records: list[tuple[str, str, tuple[int, ...]]],
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...] | None,
) -> TapDiscovery:
    """Assign roles to ``records`` = ``[(name, kind, (C, X, Y, Z))]`` in production order."""
    in_spatial = tuple(input_shape[2:])
    layers = [
        LayerInfo(name, kind, tuple(shape), _scale(in_spatial, tuple(shape[1:])), i)
        for i, (name, kind, shape) in enumerate(records)
    ]
    if not layers:
        raise ConfigError("tap discovery: the network produced no 5-D feature map (is it a 3-D network?)")
    # encoder: up to the first output finer than the coarsest seen so far
    end, coarsest = len(layers), 0.0
    for la in layers:
        if la.coarseness < coarsest - 1e-9:
            end = la.order
            break
        coarsest = max(coarsest, la.coarseness)
    encoder = layers[:end]
    seen: dict[float, set[int]] = {}
    concat: set[int] = set()
    for la in encoder:
        chans = seen.setdefault(la.coarseness, set())
        c = la.shape[0]
        if any(a != b and a + b == c for a in chans for b in chans) or "cat" in la.kind:
            concat.add(la.order)
        chans.add(c)
    roles: dict[str, str] = {}
    top = max(la.coarseness for la in encoder)
    at_top = [la for la in encoder if abs(la.coarseness - top) < 1e-9 and la.order not in concat]
    if at_top:
        graph_ops = all(re.match(r"op\d+\.", la.name) for la in at_top)  # TorchScript values
        prefix = at_top[0].name.split(".")[0]
        same = [] if graph_ops else [la for la in at_top if la.name.split(".")[0] == prefix]
        bottleneck = (same or at_top)[-1]
        roles["bottleneck"] = bottleneck.name
        bottleneck.roles.append("bottleneck")
    scales = sorted({la.coarseness for la in encoder if la.coarseness < top - 1e-9})
    for k, s in enumerate(scales):
        cands = [la for la in encoder if abs(la.coarseness - s) < 1e-9 and la.order not in concat]
        if cands:
            roles[f"level{k}"] = cands[-1].name
            cands[-1].roles.append(f"level{k}")
    if at_top:
        extra = _skip_at_bottleneck_scale(encoder, roles["bottleneck"], top, concat, graph_ops)
        if extra is not None:
            key = f"level{len([r for r in roles if r.startswith('level')])}"
            roles[key] = extra.name
            extra.roles.append(key)
    multiple = 1
    for la in layers:
        for s in la.scale:
            if s >= 1 and abs(s - round(s)) < 1e-6:
                multiple = math.lcm(multiple, round(s))
    return TapDiscovery(tuple(input_shape), output_shape, layers, roles, multiple, end)


def _skip_at_bottleneck_scale(
    encoder: list[LayerInfo], bottleneck_name: str, top: float, concat: set[int], graph_ops: bool
) -> LayerInfo | None:
    """An encoder output at the bottleneck's own scale that the decoder also receives (MONAI
    ``UNet``: the last down-sampling block, concatenated with the bottom block): the last
    block output at that scale before the bottleneck that is neither inside the bottleneck
    nor inside a later block (TorchScript values: the last with other channels)."""
    b = next(la for la in encoder if la.name == bottleneck_name)
    cands = [
        la
        for la in encoder
        if abs(la.coarseness - top) < 1e-9
        and la.order < b.order
        and la.order not in concat
        and not la.name.startswith(b.name + ".")
        and not any(o.order > la.order and la.name.startswith(o.name + ".") for o in encoder)
    ]
    if graph_ops:
        cands = [la for la in cands if la.shape[0] != b.shape[0]]
    return cands[-1] if cands else None


def _first_tensor(value: Any) -> Tensor | None:
    if torch.is_tensor(value):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            if torch.is_tensor(v):
                return v
    return None


@torch.no_grad()
def discover_module(module: nn.Module, x: Tensor) -> TapDiscovery:
    """Hooks on every named sub-module, one forward pass of ``x`` ``(B, C, X, Y, Z)``."""
    records: list[tuple[str, str, tuple[int, ...]]] = []
    handles = []

    def make_hook(name: str):
        def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
            t = _first_tensor(out)
            if t is not None and t.ndim == 5 and t.is_floating_point() and t.shape[0] == x.shape[0]:
                records.append((name, type(mod).__name__, tuple(int(s) for s in t.shape[1:])))

        return hook

    for name, sub in module.named_modules():
        if name:
            handles.append(sub.register_forward_hook(make_hook(name)))
    was_training = module.training
    module.eval()
    try:
        out = module(x)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    t = _first_tensor(out)
    return build_discovery(records, tuple(x.shape), None if t is None else tuple(t.shape))
