"""TorchScript files: loading, reading internal tensors, and the untrained control.

``torch.jit.load`` deserialises TorchScript code and tensors only (no Python pickle of
arbitrary objects). Python forward hooks do not work inside a ScriptModule, so taps are
read from the *inlined graph*: every ``aten::`` operation that produces a 5-D tensor is a
candidate layer named ``op<k>.<operation>`` (``k`` = position in the inlined graph, e.g.
``op21.conv3d``), and a copy of the graph that also returns the chosen values is compiled
into a function. The network itself is not modified.

Untrained control: parameters of ``Conv*``, ``ConvTranspose*``, ``Linear`` and norm
modules (known by their TorchScript ``original_name``) are re-drawn with PyTorch's default
initialisation (what their ``reset_parameters`` does); any other module type holding
parameters makes the control unavailable (reason given).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from napari_invert.attack.taps import Tapper
from napari_invert.errors import ConfigError, DataError
from napari_invert.models.sources.discovery import TapDiscovery, build_discovery


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """``torch.jit.load(path, map_location="cpu")`` with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "TorchScript file not found")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = ""
        if "constants.pkl" in str(exc) or "code/" in str(exc):
            hint = " (a state dict? use model.kind: monai with weights:)"
        raise DataError(path, f"not a readable TorchScript archive{hint}: {first[:140]}") from None
    return module


def _candidates(module: torch.jit.ScriptModule) -> tuple[Any, list[tuple[int, str, Any]]]:
    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    values = []
    for i, node in enumerate(graph.nodes()):
        kind = node.kind()
        if not kind.startswith("aten::"):
            continue
        for out in node.outputs():
            if out.type().kind() == "TensorType":
                values.append((i, kind, out))
    return graph, values


def _op_name(i: int, kind: str) -> str:
    return f"op{i}.{kind.split('::', 1)[1].lstrip('_')}"


def _compile_with_outputs(module: torch.jit.ScriptModule, wanted: list[str] | None):
    """A function ``f(module._c, x) -> (output, *values)``; ``wanted`` = op names or all."""
    graph, values = _candidates(module)
    chosen = [(i, k, v) for i, k, v in values if wanted is None or _op_name(i, k) in wanted]
    if wanted is not None:
        order = {n: j for j, n in enumerate(wanted)}
        chosen.sort(key=lambda t: order[_op_name(t[0], t[1])])
    ret = graph.return_node()
    original = ret.input()
    inputs = [original] + [v for _, _, v in chosen]
    tup = graph.create("prim::TupleConstruct", inputs)
    tup.output().setType(torch._C.TupleType([v.type() for v in inputs]))
    tup.insertBefore(ret)
    ret.removeInput(0)
    ret.addInput(tup.output())
    fn = torch._C._create_function_from_graph("napari_invert_taps", graph)
    return fn, [_op_name(i, k) for i, k, _ in chosen]


@torch.no_grad()
def discover_torchscript(module: torch.jit.ScriptModule, x: Tensor) -> TapDiscovery:
    """Tap discovery on a ScriptModule (see the module docstring for layer names)."""
    module.eval()
    fn, names = _compile_with_outputs(module, None)
    out = fn(module._c, x)
    kinds = {n: n.split(".", 1)[1] for n in names}
    records = [
        (n, kinds[n], tuple(int(s) for s in t.shape[1:]))
        for n, t in zip(names, out[1:])
        if torch.is_tensor(t) and t.ndim == 5 and t.is_floating_point() and t.shape[0] == x.shape[0]
    ]
    first = out[0] if torch.is_tensor(out[0]) else None
    return build_discovery(records, tuple(x.shape), None if first is None else tuple(first.shape))


def torchscript_layer_names(module: torch.jit.ScriptModule) -> list[str]:
    _, values = _candidates(module)
    return [_op_name(i, k) for i, k, _ in values]


class ScriptHolder(nn.Module):
    """Plain ``nn.Module`` around a ScriptModule, so that ``requires_grad_`` and the other
    ``nn.Module`` methods the attack uses work (ScriptModules refuse some of them)."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.inner = scripted

    def forward(self, x: Tensor) -> Any:
        return self.inner(x)


class GraphTapper(Tapper):
    """Tapper for a ScriptModule: values of the inlined graph named ``op<k>.<operation>``."""

    def __init__(self, holder: ScriptHolder, layer_names: list[str]) -> None:
        module = holder.inner
        valid = torchscript_layer_names(module)
        unknown = [n for n in layer_names if n not in valid]
        if unknown:
            raise ConfigError(
                f"TorchScript tap: no value named {', '.join(map(repr, unknown))}; "
                f"available: {', '.join(valid)}"
            )
        super().__init__(holder)
        self.layer_names = list(layer_names)
        self.names = list(layer_names)
        self._fn, _ = _compile_with_outputs(module, self.layer_names)

    def _tap(self, x: Tensor) -> list[Tensor]:
        out = self._fn(self.module.inner._c, x)
        return list(out[1:])

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "layer_names": list(self.layer_names), "torchscript": True}


_CONV = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear")
_NORM = (
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "GroupNorm",
    "LayerNorm",
)


def reinitialise_torchscript(module: torch.jit.ScriptModule, seed: int = 0) -> str | None:
    """Re-draw every parameter in place with PyTorch's default initialisation.

    Returns ``None`` on success, else the reason the control is unavailable (the module
    is then left unchanged).
    """
    plan: list[tuple[str, Any]] = []
    for name, sub in module.named_modules():
        own = [p for n, p in sub.named_parameters(recurse=False)]
        if not own:
            continue
        kind = getattr(sub, "original_name", type(sub).__name__)
        if kind in _CONV or kind in _NORM or kind == "PReLU":
            plan.append((kind, sub))
        else:
            return (
                f"module '{name or '<root>'}' ({kind}) holds parameters of a type "
                "the control cannot re-initialise"
            )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for kind, sub in plan:
            params = dict(sub.named_parameters(recurse=False))
            w, b = params.get("weight"), params.get("bias")
            if kind in _CONV:
                assert w is not None
                # kaiming_uniform_(a=sqrt(5)): bound = 1/sqrt(fan_in), fan_in = size(1) x kernel
                fan_in = w[0].numel()
                bound = 1.0 / math.sqrt(max(fan_in, 1))
                w.copy_(torch.empty_like(w).uniform_(-bound, bound, generator=gen))
                if b is not None:
                    b.copy_(torch.empty_like(b).uniform_(-bound, bound, generator=gen))
            elif kind == "PReLU":
                assert w is not None
                w.fill_(0.25)
            else:
                if w is not None:
                    w.fill_(1.0)
                if b is not None:
                    b.zero_()
                buffers = dict(sub.named_buffers(recurse=False))
                if "running_mean" in buffers:
                    buffers["running_mean"].zero_()
                if "running_var" in buffers:
                    buffers["running_var"].fill_(1.0)
    return None
