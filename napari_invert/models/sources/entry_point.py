"""``model.kind: entry_point``: ``package.module:function`` returning an ``nn.Module``.

This imports and runs the user's own Python code (that is its purpose); weights given in
the config are still read with ``weights_only=True`` or from safetensors.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from napari_invert.errors import ConfigError
from napari_invert.models.sources._loaded import LoadedModel
from napari_invert.models.sources._weights import load_state_into, load_tensor_file


def resolve_entry_point(spec: str) -> Any:
    """``'package.module:function'`` -> the callable (ConfigError naming what is missing)."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model.entry_point: cannot import '{module_name}' ({exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"model.entry_point: '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"model.entry_point: '{spec}' is not callable")
    return obj


def load_entry_point(cfg: Any) -> LoadedModel:
    fn = resolve_entry_point(cfg.entry_point)
    args = dict(cfg.args)

    def make() -> nn.Module:
        try:
            module = fn(**args)
        except TypeError as exc:
            raise ConfigError(f"model.args: {cfg.entry_point}(...) failed ({exc})") from None
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"model.entry_point: {cfg.entry_point} returned {type(module).__name__}, "
                "not a torch.nn.Module"
            )
        return module

    module = make()
    if cfg.weights is not None:
        load_state_into(module, load_tensor_file(cfg.weights), cfg.weights)
    return LoadedModel(
        module=module,
        rebuild=make,
        description={
            "kind": "entry_point",
            "entry_point": cfg.entry_point,
            "args": args,
            "weights": None if cfg.weights is None else str(cfg.weights),
        },
    )
