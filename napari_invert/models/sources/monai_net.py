"""``model.kind: monai``: a class of :mod:`monai.networks.nets`, its arguments and weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from napari_invert.errors import ConfigError
from napari_invert.models.sources._loaded import LoadedModel
from napari_invert.models.sources._weights import load_state_into, load_tensor_file


def monai_network_class(name: str) -> type[nn.Module]:
    """The class ``monai.networks.nets.<name>`` (ConfigError if it is not a network)."""
    import monai.networks.nets as nets

    cls = getattr(nets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"model.network: '{name}' is not a network class of monai.networks.nets "
            "(e.g. UNet, BasicUNet, SegResNet, DynUNet, AttentionUnet, UNETR, SwinUNETR)"
        )
    return cls


def build_network(cls: type[nn.Module], args: dict[str, Any], key: str = "model.args") -> nn.Module:
    """``cls(**args)`` with a one-line ConfigError when the arguments do not fit."""
    try:
        return cls(**args)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ConfigError(
            f"{key}: {cls.__name__}(...) cannot be built from these arguments ({exc})"
        ) from None


def load_monai(cfg: Any) -> LoadedModel:
    """Build ``cfg.network`` with ``cfg.args`` and load ``cfg.weights`` (weights only)."""
    cls = monai_network_class(cfg.network)
    args = dict(cfg.args)

    def make() -> nn.Module:
        return build_network(cls, args)

    module = make()
    if cfg.weights is not None:
        load_state_into(module, load_tensor_file(cfg.weights), cfg.weights)
    return LoadedModel(
        module=module,
        rebuild=make,
        in_channels=args.get("in_channels"),
        description={
            "kind": "monai",
            "class": f"monai.networks.nets.{cls.__name__}",
            "args": args,
            "weights": None if cfg.weights is None else str(cfg.weights),
        },
    )
