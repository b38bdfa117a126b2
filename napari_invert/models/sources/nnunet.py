"""``model.kind: nnunet``: an nnU-Net v2 trained-model folder.

Reads ``plans.json`` (``configurations.<configuration>.architecture``: the
``dynamic_network_architectures`` class and its ``arch_kwargs``), ``dataset.json``
(input channels, classes) and ``fold_<k>/<checkpoint>`` (``network_weights``), and rebuilds
the network with ``dynamic-network-architectures`` (``pip install
'napari-invert[nnunet]'``). Nothing is imported by name except that package's classes and
``torch.nn`` layer types listed in ``_kw_requires_import``.

nnU-Net checkpoints also hold training state (optimizer, logging, ``init_args``); when
``torch.load(weights_only=True)`` refuses any of it, the error says so and how to export
the network weights once (``model.weights``).
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

from torch import nn

from napari_invert.errors import ConfigError, DataError
from napari_invert.models.sources._loaded import LoadedModel
from napari_invert.models.sources._weights import load_state_into, load_tensor_file, load_torch_file

DNA_PREFIX = "dynamic_network_architectures."
LAYER_PREFIX = "torch.nn."


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(path, "not found (is this an nnU-Net v2 trained-model folder?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(path, "not a JSON object")
    return data


def _import(dotted: str, prefix: str, where: Path, key: str) -> Any:
    if not isinstance(dotted, str) or not dotted.startswith(prefix):
        raise DataError(where, f"{key}: '{dotted}' refused (only {prefix}* may be imported)")
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        if prefix == DNA_PREFIX:
            raise ConfigError(
                "model.kind nnunet needs dynamic-network-architectures: pip install 'napari-invert[nnunet]'"
            ) from None
        raise DataError(where, f"{key}: cannot import '{dotted}' ({exc})") from None
    except AttributeError:
        raise DataError(where, f"{key}: '{dotted}' does not exist") from None


def _configuration(plans: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    configs = plans.get("configurations") or {}
    if name not in configs:
        raise DataError(path, f"no configuration '{name}' (available: {', '.join(configs) or 'none'})")
    conf = dict(configs[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise DataError(path, f"configuration '{name}' inherits from unknown '{parent}'")
        seen.add(parent)
        conf = {**configs[parent], **conf}
    return conf


def load_nnunet(cfg: Any) -> LoadedModel:
    folder = Path(cfg.path)
    if not folder.is_dir():
        raise DataError(folder, "nnU-Net model folder not found")
    plans_path = folder / "plans.json"
    plans = _json(plans_path)
    dataset = _json(folder / "dataset.json")
    conf = _configuration(plans, cfg.configuration, plans_path)
    arch = conf.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch:
        raise DataError(
            plans_path,
            f"configuration '{cfg.configuration}' has no 'architecture' block (plans of nnU-Net < 2.4 are "
            "not supported: export the network as TorchScript instead)",
        )
    cls = _import(arch["network_class_name"], DNA_PREFIX, plans_path, "network_class_name")
    kwargs = dict(arch.get("arch_kwargs") or {})
    for key in arch.get("_kw_requires_import", []):
        if kwargs.get(key) is not None:
            kwargs[key] = _import(kwargs[key], LAYER_PREFIX, plans_path, f"arch_kwargs.{key}")
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    labels = dataset.get("labels") or {}
    in_channels = len(channels)
    regions = any(isinstance(v, (list, tuple)) for v in labels.values())
    num_classes = len(labels) - 1 if regions else len(labels)
    if in_channels < 1 or num_classes < 1:
        raise DataError(folder / "dataset.json", "channel_names / labels missing")

    def make() -> nn.Module:
        try:
            return cls(input_channels=in_channels, num_classes=num_classes, deep_supervision=False, **kwargs)
        except TypeError as exc:
            raise DataError(plans_path, f"{cls.__name__} cannot be built from arch_kwargs ({exc})") from None

    module = make()
    fold_dir = folder / (f"fold_{cfg.fold}")
    ckpt = fold_dir / cfg.checkpoint
    if cfg.weights is not None:
        state = load_tensor_file(cfg.weights)
        source = Path(cfg.weights)
    else:
        if not ckpt.is_file():
            raise DataError(ckpt, "nnU-Net checkpoint not found")
        try:
            obj = load_torch_file(ckpt)
        except DataError as exc:
            if "refused" not in exc.problem:
                raise
            raise DataError(
                ckpt,
                f"{exc.problem.split(' (napari-invert')[0]}: "
                "nnU-Net stores training state beside the weights. "
                'Export the weights once, where you trust the file: python -c "import torch; '
                f"c = torch.load('{ckpt}', weights_only=False); "
                "torch.save(c['network_weights'], 'weights.pth')\" "
                "and set model.weights: weights.pth",
            ) from None
        if not isinstance(obj, dict) or "network_weights" not in obj:
            raise DataError(ckpt, "no 'network_weights' in this checkpoint (not an nnU-Net v2 checkpoint?)")
        state = obj["network_weights"]
        source = ckpt
    if isinstance(state, dict):
        state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    load_state_into(module, state, source)
    strides = kwargs.get("strides") or []
    multiple = 1
    for axis in range(3):
        try:
            f = math.prod(int(s[axis]) if isinstance(s, (list, tuple)) else int(s) for s in strides)
        except (TypeError, ValueError, IndexError):
            f = 1
        multiple = math.lcm(multiple, f)
    patch = conf.get("patch_size")
    return LoadedModel(
        module=module,
        rebuild=make,
        in_channels=in_channels,
        patch_size=tuple(int(p) for p in patch) if isinstance(patch, list) and len(patch) == 3 else None,
        multiple_of=multiple,
        description={
            "kind": "nnunet",
            "folder": str(folder),
            "configuration": cfg.configuration,
            "fold": cfg.fold,
            "class": arch["network_class_name"],
            "weights": str(source),
            "normalization_schemes": conf.get("normalization_schemes"),
            "spacing": conf.get("spacing"),
        },
    )
