"""One adapter around any model source: forward, channels, spatial multiple, layers, taps.

:func:`load_model_source` reads a ``model:`` block (see :mod:`napari_invert.audit_config`)
and returns a :class:`ModelAdapter`; :func:`model_adapter_from_dict` does the same for a
plain dict (the plugin's entry point).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from napari_invert.attack.taps import HookTapper, Tapper, freeze
from napari_invert.errors import ConfigError
from napari_invert.models.sources._loaded import LoadedModel
from napari_invert.models.sources.discovery import TapDiscovery, discover_module

#: dummy input size when neither ``input_size`` nor a patch size is known
DEFAULT_INPUT_SIZE = (64, 64, 64)


def tap_label(entry: str | dict[str, Any]) -> tuple[str, str]:
    """``(name, spec)`` of one ``attack.taps`` entry. The name becomes a study folder name
    (no ``_``, ``/`` or spaces: ``_`` is written as ``-``)."""
    if isinstance(entry, dict):
        if set(entry) - {"name", "layers"} or "layers" not in entry:
            raise ConfigError(f"attack.taps: entry {entry} must be a role/layer string or {{name, layers}}")
        layers = entry["layers"]
        spec = "+".join(layers) if isinstance(layers, list) else str(layers)
        name = str(entry.get("name") or spec)
    else:
        spec = name = str(entry)
    name = name.replace("_", "-")
    if not re.fullmatch(r"[A-Za-z0-9.+\-\[\]]+", name):
        raise ConfigError(f"attack.taps: tap name '{name}' may only use letters, digits, '.', '+', '-'")
    return name, spec


def _first_conv_in_channels(module: nn.Module) -> int | None:
    for name, p in module.named_parameters():
        if p.ndim == 5:
            return int(p.shape[0] if "transp" in name.lower() else p.shape[1])
    return None


class ModelAdapter:
    """The user's network behind one interface.

    Attributes: ``module`` (eval mode, frozen), ``config`` (the validated ``model:`` block),
    ``description`` (provenance, JSON-ready). Shapes are ``(B, C, X, Y, Z)``.
    """

    def __init__(self, loaded: LoadedModel, config: Any) -> None:
        self.loaded = loaded
        self.config = config
        self.is_torchscript = isinstance(loaded.module, torch.jit.ScriptModule)
        if self.is_torchscript:
            from napari_invert.models.sources.torchscript import ScriptHolder

            loaded.module = ScriptHolder(loaded.module)
        self.module = freeze(loaded.module)
        self.description = dict(loaded.description)

    # -- shapes ------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        n = self.config.in_channels or self.loaded.in_channels or _first_conv_in_channels(self.module)
        if n is None:
            raise ConfigError("model.in_channels: cannot tell the network's input channels; set it")
        return int(n)

    @property
    def patch_size(self) -> tuple[int, int, int] | None:
        return self.config.patch_size or self.loaded.patch_size

    @property
    def input_size(self) -> tuple[int, int, int]:
        """Spatial size of the dummy input used for discovery."""
        return tuple(self.config.input_size or self.patch_size or DEFAULT_INPUT_SIZE)  # type: ignore[return-value]

    @cached_property
    def discovery(self) -> TapDiscovery:
        """Layers and roles from one dummy forward pass (zeros, ``(1, C, *input_size)``)."""
        x = torch.zeros((1, self.in_channels, *self.input_size), device=self.device)
        try:
            if self.is_torchscript:
                from napari_invert.models.sources.torchscript import discover_torchscript

                return discover_torchscript(self.module.inner, x)
            return discover_module(self.module, x)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            msg = " ".join(str(exc).split())[:200]
            raise ConfigError(
                f"model: a forward pass of a {tuple(x.shape)} input failed ({msg}); set model.input_size "
                "(and model.in_channels) to a shape the network accepts"
            ) from None

    @property
    def multiple_of(self) -> int:
        """Spatial sizes must be divisible by this (config, source, or the coarsest scale)."""
        return int(self.config.multiple_of or self.loaded.multiple_of or self.discovery.multiple_of)

    @property
    def out_channels(self) -> int | None:
        shape = self.discovery.output_shape
        return None if shape is None else int(shape[1])

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> ModelAdapter:
        self.module.to(device)
        return self

    def named_modules(self) -> list[str]:
        """Names a tap may use (module names; ``op<k>.<operation>`` for TorchScript)."""
        if self.is_torchscript:
            from napari_invert.models.sources.torchscript import torchscript_layer_names

            return torchscript_layer_names(self.module.inner)
        return [n for n, _ in self.module.named_modules() if n]

    # -- running ---------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """The network's output for ``x`` (eval mode, no gradients)."""
        out = self.module(x.to(self.device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    __call__ = forward

    def check_grid(self, shape: tuple[int, ...], channels: int = 1) -> None:
        """ConfigError when volumes of spatial ``shape`` with ``channels`` do not fit."""
        if channels != self.in_channels:
            raise ConfigError(
                f"model: the network takes {self.in_channels} input channel(s) but the cohort gives "
                f"{channels} (one image per subject); audit a single-channel model or set model.in_channels"
            )
        bad = [s for s in shape if s % self.multiple_of]
        if bad:
            raise ConfigError(
                f"model: grid {tuple(shape)} is not divisible by {self.multiple_of} (the network's coarsest "
                "scale); set model.multiple_of or the preprocessing to match training"
            )
        if self.patch_size and any(p > s for p, s in zip(self.patch_size, shape)):
            raise ConfigError(f"model.patch_size {self.patch_size} is larger than the grid {tuple(shape)}")

    @torch.no_grad()
    def segment(self, image: np.ndarray) -> np.ndarray:
        """Label map ``(X, Y, Z)`` int64 (argmax over classes) of one ``(X, Y, Z)`` image;
        by sliding window of ``patch_size`` when the model was trained on patches."""
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None].to(self.device)
        return self.volume_logits(x).argmax(1)[0].cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def volume_logits(self, x: Tensor) -> Tensor:
        """Logits ``(B, C, X, Y, Z)`` of whole volumes ``x (B, C_in, X, Y, Z)``: by sliding
        window of ``patch_size`` when the model was trained on patches, else one forward pass
        (the path :meth:`segment` and the membership signals use)."""
        if self.patch_size:
            from monai.inferers import sliding_window_inference

            return sliding_window_inference(
                x.to(self.device),
                self.patch_size,
                1,
                self.forward,
                overlap=self.config.sw_overlap,
                mode="gaussian",
            )
        return self.forward(x)

    # -- taps ------------------------------------------------------------------------------
    def resolve_tap(self, entry: str | dict[str, Any]) -> tuple[str, list[str]]:
        """``(tap name, layer names)`` for an ``attack.taps`` entry (roles or layer names)."""
        name, spec = tap_label(entry)
        return name, self.discovery.resolve(spec, self.named_modules())

    def tapper(self, entry: str | dict[str, Any] | list[str]) -> Tapper:
        """A tapper reading the layers named by ``entry`` (roles and/or layer names)."""
        layers = entry if isinstance(entry, list) else self.resolve_tap(entry)[1]
        if self.is_torchscript:
            from napari_invert.models.sources.torchscript import GraphTapper

            return GraphTapper(self.module, layers)
        return HookTapper(self.module, layers)

    # -- the untrained control -------------------------------------------------------------
    def untrained(self, seed: int = 0) -> tuple[ModelAdapter | None, str | None]:
        """``(same architecture at its initialisation, None)`` or ``(None, reason)``."""
        torch.manual_seed(seed)
        if self.is_torchscript:
            from napari_invert.models.sources.torchscript import load_torchscript, reinitialise_torchscript

            fresh = load_torchscript(Path(self.config.path))
            reason = reinitialise_torchscript(fresh, seed)
            if reason:
                return None, f"untrained control unavailable for this TorchScript file: {reason}"
            loaded = LoadedModel(fresh, None, {**self.description, "control": "re-initialised"})
        else:
            if self.loaded.rebuild is None:
                return None, self.loaded.untrained_note or "this source cannot rebuild its network"
            module = self.loaded.rebuild()
            if self.config.kind == "entry_point":  # the function may have loaded weights itself
                for sub in module.modules():
                    reset = getattr(sub, "reset_parameters", None)
                    if callable(reset):
                        reset()
            loaded = LoadedModel(module, None, {**self.description, "control": "re-initialised"})
        loaded.in_channels = self.loaded.in_channels
        loaded.patch_size = self.loaded.patch_size
        loaded.multiple_of = self.loaded.multiple_of
        adapter = ModelAdapter(loaded, self.config)
        adapter.to(self.device)
        return adapter, None


def load_model_source(config: Any) -> ModelAdapter:
    """Read the network described by a validated ``model:`` block; returns its adapter."""
    kind = config.kind
    if kind == "monai":
        from napari_invert.models.sources.monai_net import load_monai

        loaded = load_monai(config)
    elif kind == "bundle":
        from napari_invert.models.sources.bundle import load_bundle

        loaded = load_bundle(config)
    elif kind == "torchscript":
        from napari_invert.models.sources.torchscript import load_torchscript

        module = load_torchscript(config.path)
        loaded = LoadedModel(module, None, {"kind": "torchscript", "path": str(config.path)})
    elif kind == "nnunet":
        from napari_invert.models.sources.nnunet import load_nnunet

        loaded = load_nnunet(config)
    elif kind == "entry_point":
        from napari_invert.models.sources.entry_point import load_entry_point

        loaded = load_entry_point(config)
    else:  # pragma: no cover - the schema forbids it
        raise ConfigError(f"model.kind: unknown kind {kind!r}")
    return ModelAdapter(loaded, config)


def model_adapter_from_dict(block: dict[str, Any], base: str | Path | None = None) -> ModelAdapter:
    """Plugin entry point: a ``model:`` block as a dict (relative paths against ``base``)."""
    from napari_invert.audit_config import parse_model_config

    cfg = parse_model_config(block, source="model", base=Path(base) if base else None)
    return load_model_source(cfg)
