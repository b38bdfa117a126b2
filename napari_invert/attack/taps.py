"""The threat model: which internal tensors of a victim network the attacker can read.

A *tapper* is a callable ``x -> list[Tensor]``: it runs the (frozen, eval-mode) victim on
``x`` ``(B, C, X, Y, Z)`` under ``torch.no_grad`` and returns the tapped tensors, each
``(B, C_i, X_i, Y_i, Z_i)``. Float tensors are returned as float32 (even when the victim
ran under bf16 autocast); max-pooling indices are int64 flat positions into the grid that
was pooled.

* :func:`make_tapper` for our segmenters, by tap name (grammar: :mod:`napari_invert.tap_names`):

  - ``bottleneck``: ``[bottleneck]`` (the paper's latent space ``Z = Enc(X)``);
  - ``bottleneck+skips`` (U-Net): ``[bottleneck, skip0, ..., skip{L-1}]`` — everything the
    U-Net decoder receives;
  - ``bottleneck+indices`` (SegNet): ``[bottleneck, indices0, ..., indices{L-1}]`` —
    everything the SegNet decoder receives;
  - per level and combinations: ``skip0``, ``bottleneck+skip3``, ``bottleneck+indices0`` ...

* :class:`HookTapper` for any ``nn.Module`` (e.g. a stock ``monai.networks.nets.UNet``):
  forward hooks on named sub-modules, registered only for the duration of a call, so the
  network is not modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from napari_invert.device import autocast
from napari_invert.errors import ConfigError
from napari_invert.models.base import Segmenter
from napari_invert.tap_names import VALID_TAPS, parse_tap


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode and switch off gradients of all its parameters."""
    module.eval()
    module.requires_grad_(False)
    return module


def _clean(t: Tensor) -> Tensor:
    t = t.detach()
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


class Tapper:
    """Base class: a frozen victim and the names of the tensors it hands the attacker.

    Attributes
    ----------
    module
        The victim network (frozen: eval mode, ``requires_grad=False``).
    names
        One name per returned tensor, in return order (known after the first call for
        :class:`HookTapper` modules whose outputs are tuples).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = freeze(module)
        self.names: list[str] = []
        self._last_shapes: list[tuple[int, ...]] | None = None
        self._last_dtypes: list[str] | None = None

    # subclasses implement
    def _tap(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: Tensor) -> list[Tensor]:
        """Tapped tensors for input ``x`` ``(B, C, X, Y, Z)`` (on the module's device)."""
        freeze(self.module)
        with torch.no_grad(), autocast(x.device):
            out = [_clean(t) for t in self._tap(x)]
        self._last_shapes = [tuple(int(s) for s in t.shape) for t in out]
        self._last_dtypes = [str(t.dtype).replace("torch.", "") for t in out]
        return out

    @property
    def device(self) -> torch.device:
        """Device of the victim's parameters (CPU for a parameter-free module)."""
        try:
            return next(self.module.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def to(self, device: str | torch.device) -> Tapper:
        """Move the victim to ``device`` (in place); returns ``self``."""
        self.module.to(device)
        return self

    def describe(self, sample_input: Tensor | None = None) -> list[dict[str, Any]]:
        """``[{"name", "shape", "dtype"}]`` per tapped tensor.

        Shapes come from ``sample_input`` when given, else from the last call (``None``
        before the first call).
        """
        if sample_input is not None:
            self(sample_input.to(self.device))
        shapes = self._last_shapes or [None] * len(self.names)
        dtypes = self._last_dtypes or [None] * len(self.names)
        return [
            {"name": n, "shape": None if s is None else list(s), "dtype": d}
            for n, s, d in zip(self.names, shapes, dtypes)
        ]

    def spec(self) -> dict[str, Any]:
        """JSON description of the threat model (stored with decoders)."""
        return {"type": type(self).__name__, "names": list(self.names)}


class SegmenterTapper(Tapper):
    """Tapper for a :class:`~napari_invert.models.Segmenter` by tap name."""

    def __init__(self, model: Segmenter, tap: str) -> None:
        arch = getattr(model, "arch", None)
        if arch not in VALID_TAPS:
            raise ConfigError(
                f"tap '{tap}': make_tapper needs a napari-invert Segmenter (unet/segnet); "
                "use HookTapper(module, layer_names) for other networks"
            )
        try:
            names = parse_tap(tap, arch, model.levels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        super().__init__(model)
        self.tap = tap
        self.arch = arch
        self.names = names

    def _tap(self, x: Tensor) -> list[Tensor]:
        f = self.module.encode(x)
        out: list[Tensor] = []
        for name in self.names:
            if name == "bottleneck":
                out.append(f.bottleneck)
            elif name.startswith("skip"):
                out.append(f.skips[int(name[4:])])
            else:
                assert f.indices is not None
                out.append(f.indices[int(name[7:])])
        return out

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "tap": self.tap, "arch": self.arch}


def make_tapper(model: Segmenter, tap: str) -> SegmenterTapper:
    """Tapper for tap name ``tap`` of a U-Net / SegNet (see :mod:`napari_invert.tap_names`).

    The model is frozen (eval mode, no gradients) in place.
    """
    return SegmenterTapper(model, tap)


class _StopForward(Exception):
    """Raised from a hook once every tapped layer has fired (skips the rest of forward)."""


class HookTapper(Tapper):
    """Generic tapper: outputs of named sub-modules of any ``nn.Module``.

    Parameters
    ----------
    module
        Any network taking ``x`` ``(B, C, X, Y, Z)``; frozen in place, otherwise unchanged
        (hooks exist only during a call).
    layer_names
        Keys of ``dict(module.named_modules())``. A module whose output is a tuple (e.g.
        ``MaxPool3d(return_indices=True)``) contributes every tensor in it, named
        ``"<layer>[i]"``. If a module runs several times per forward, its latest output
        is used (with ``stop_early``: the latest when the last tapped layer fires).
    stop_early
        Abort the forward pass (via an internal exception) as soon as every tapped layer
        has produced its output, so the rest of the network is not computed.
    """

    def __init__(self, module: nn.Module, layer_names: Sequence[str], stop_early: bool = True) -> None:
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        layer_names = list(layer_names)
        if not layer_names:
            raise ConfigError("HookTapper: give at least one layer name")
        available = dict(module.named_modules())
        unknown = [n for n in layer_names if n not in available]
        if unknown:
            listing = ", ".join(repr(n) for n in available if n) or "(none)"
            raise ConfigError(
                f"HookTapper: no layer named {', '.join(repr(n) for n in unknown)} in "
                f"{type(module).__name__}; available: {listing}"
            )
        super().__init__(module)
        self.layer_names = layer_names
        self._layers = [available[n] for n in layer_names]
        self.stop_early = stop_early
        self.names = list(layer_names)

    def _tap(self, x: Tensor) -> list[Tensor]:
        captured: dict[int, Any] = {}
        handles = []

        def make_hook(i: int):
            def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
                captured[i] = out
                if self.stop_early and len(captured) == len(self._layers):
                    raise _StopForward

            return hook

        for i, layer in enumerate(self._layers):
            handles.append(layer.register_forward_hook(make_hook(i)))
        try:
            self.module(x)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        out: list[Tensor] = []
        names: list[str] = []
        for i, name in enumerate(self.layer_names):
            if i not in captured:
                raise RuntimeError(f"HookTapper: layer '{name}' did not run during the forward pass")
            value = captured[i]
            if torch.is_tensor(value):
                out.append(value)
                names.append(name)
            elif isinstance(value, (tuple, list)):
                tensors = [v for v in value if torch.is_tensor(v)]
                if not tensors:
                    raise RuntimeError(f"HookTapper: layer '{name}' returned no tensor")
                out.extend(tensors)
                names.extend(f"{name}[{j}]" for j in range(len(tensors)))
            else:
                raise RuntimeError(
                    f"HookTapper: layer '{name}' returned {type(value).__name__}, not a tensor"
                )
        self.names = names
        return out

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "layer_names": list(self.layer_names)}
