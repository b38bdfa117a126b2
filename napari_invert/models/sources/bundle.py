"""``model.kind: bundle``: a MONAI bundle folder.

The network definition (``configs/inference.json`` or ``.yaml``, key ``network_def``) is
instantiated with MONAI's own :class:`monai.bundle.ConfigParser`, after a check of the part
of the config it will evaluate. ``ConfigParser`` runs ``eval`` on every ``"$..."`` string
and calls whatever ``"_target_"`` names, so a bundle config is code. napari-invert therefore
hands it only the network definition and the items it references (``"@id"``), and refuses:

* expressions (strings starting with ``$``) and macros (``%``, which read other files);
* ``_target_`` values other than ``nn.Module`` classes of ``monai.networks`` (a bare name
  such as ``SegResNet`` must be a class of :mod:`monai.networks.nets`) or ``torch.nn``;
* ``_requires_`` and ``_mode_`` (which can run other items or the debugger).

Weights: ``models/model.pt`` (state dict, ``weights_only=True``) or ``model.safetensors``.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from napari_invert.errors import DataError
from napari_invert.models.sources._loaded import LoadedModel
from napari_invert.models.sources._weights import load_state_into, load_tensor_file

ALLOWED_PREFIXES = ("monai.networks.", "torch.nn.")
REFUSED_KEYS = ("_requires_", "_mode_")


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DataError(path, f"unreadable bundle config ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(path, "bundle config is not a mapping")
    return data


def _allowed_target(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    if "." not in target:
        import monai.networks.nets as nets

        obj = getattr(nets, target, None)
        return isinstance(obj, type) and issubclass(obj, nn.Module)
    if not target.startswith(ALLOWED_PREFIXES):
        return False
    module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return False
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _lookup(config: dict[str, Any], ref: str) -> Any:
    node: Any = config
    for part in ref.replace("#", "::").split("::"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(ref)
    return node


def check_network_def(config: dict[str, Any], key: str, source: Path) -> dict[str, Any]:
    """The subset of ``config`` that instantiating ``key`` evaluates, checked (see module doc).

    Raises :class:`DataError` naming the file and the offending config path.
    """
    needed: dict[str, Any] = {}
    todo = [key]
    while todo:
        ref = todo.pop()
        top = ref.replace("#", "::").split("::")[0]
        if top in needed:
            continue
        if top not in config:
            raise DataError(source, f"'{ref}' is referenced but not defined")
        needed[top] = config[top]

        def walk(value: Any, where: str) -> None:
            if isinstance(value, str):
                if value.startswith("$"):
                    raise DataError(
                        source,
                        f"{where}: expression '{value[:60]}' refused (ConfigParser would eval it); "
                        "write plain values in the network definition",
                    )
                if value.startswith("%"):
                    raise DataError(source, f"{where}: macro '{value[:60]}' refused")
                if value.startswith("@"):
                    todo.append(value[1:])
            elif isinstance(value, dict):
                for k, v in value.items():
                    if k in REFUSED_KEYS:
                        raise DataError(source, f"{where}::{k}: refused in a network definition")
                    if k == "_target_" and not _allowed_target(v):
                        raise DataError(
                            source,
                            f"{where}::_target_ '{v}' refused: only nn.Module classes of "
                            "monai.networks or torch.nn may be instantiated",
                        )
                    walk(v, f"{where}::{k}")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, f"{where}::{i}")

        walk(needed[top], top)
    try:
        _lookup(config, key)
    except KeyError:
        raise DataError(source, f"no '{key}' in the bundle config") from None
    return needed


def bundle_config_file(folder: Path, config_file: str | None) -> Path:
    if config_file:
        path = folder / config_file
        if not path.is_file():
            raise DataError(path, "bundle config file not found")
        return path
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        path = folder / "configs" / name
        if path.is_file():
            return path
    raise DataError(folder / "configs", "no inference.json or inference.yaml in the bundle")


def load_bundle(cfg: Any) -> LoadedModel:
    from monai.bundle import ConfigParser

    folder = Path(cfg.path)
    if not folder.is_dir():
        raise DataError(folder, "bundle folder not found")
    config_path = bundle_config_file(folder, cfg.config_file)
    checked = check_network_def(_read(config_path), cfg.network_key, config_path)

    def make() -> nn.Module:
        parser = ConfigParser(json.loads(json.dumps(checked)))
        try:
            net = parser.get_parsed_content(cfg.network_key, instantiate=True)
        except Exception as exc:  # MONAI wraps constructor errors in RuntimeError
            msg = " ".join(str(exc).split())[:200]
            raise DataError(config_path, f"'{cfg.network_key}' cannot be instantiated ({msg})") from None
        if not isinstance(net, nn.Module):
            raise DataError(config_path, f"'{cfg.network_key}' is a {type(net).__name__}, not a network")
        return net

    module = make()
    weights = Path(cfg.weights) if cfg.weights is not None else None
    if weights is None:
        for name in ("model.pt", "model.safetensors", "model.pth"):
            if (folder / "models" / name).is_file():
                weights = folder / "models" / name
                break
    if weights is None:
        hint = (
            " (models/model.ts is TorchScript: use model.kind: torchscript)"
            if (folder / "models" / "model.ts").is_file()
            else ""
        )
        raise DataError(folder / "models" / "model.pt", f"bundle weights not found{hint}")
    load_state_into(module, load_tensor_file(weights), weights)
    in_channels = None
    meta_path = folder / "configs" / "metadata.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            n = meta["network_data_format"]["inputs"]["image"]["num_channels"]
            in_channels = int(n) if isinstance(n, int) else None
        except (OSError, ValueError, KeyError, TypeError):
            in_channels = None
    return LoadedModel(
        module=module,
        rebuild=make,
        in_channels=in_channels,
        description={
            "kind": "bundle",
            "folder": str(folder),
            "config": str(config_path),
            "network_key": cfg.network_key,
            "class": type(module).__name__,
            "weights": str(weights),
        },
    )
