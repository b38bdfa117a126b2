"""Reading a user's weights file without unpickling arbitrary objects.

* ``.safetensors``: :func:`safetensors.torch.load_file` (no code at all);
* anything else (``.pt``, ``.pth``, ``.bin``, ``.ckpt``): ``torch.load(weights_only=True)``,
  which only rebuilds tensors and plain containers and refuses any other Python global
  (a pickle that would call ``os.system`` is refused *before* anything runs).

Every problem becomes one :class:`~napari_invert.errors.DataError` line that names the file:
missing, truncated/corrupt, a pickle with code or foreign objects in it, something that is
not a state dict, or weights that do not fit the network (first mismatching keys listed).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from napari_invert.errors import DataError

#: keys under which training frameworks nest the network's state dict
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "network_weights", "net", "module", "weights")
#: how many mismatching keys an error message lists
SHOW_KEYS = 3

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


#: modules whose globals torch's weights-only unpickler accepts (not worth naming)
_HARMLESS = ("torch", "collections", "_codecs", "builtins", "numpy")


def pickle_imports(path: Path) -> list[str]:
    """``module.name`` of every global a pickle (or a torch zip file's ``data.pkl``) would
    import, read with :mod:`pickletools` (which never executes anything)."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                data = zf.read(member) if member else b""
        else:
            data = path.read_bytes()
        names: list[str] = []
        strings: list[str] = []
        for op, arg, _pos in pickletools.genops(data):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8") and isinstance(
                arg, str
            ):
                strings.append(arg)
            elif op.name == "GLOBAL" and isinstance(arg, str):
                names.append(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
        return names
    except Exception:  # a broken pickle: nothing more to say
        return []


def _refusal(path: Path, exc: Exception) -> DataError:
    m = _GLOBAL_RE.search(str(exc))
    foreign = [n for n in pickle_imports(path) if not n.startswith(_HARMLESS)]
    name = m.group(1) if m else (foreign[0] if foreign else None)
    what = f"it would import '{name}'" if name else "it holds objects other than tensors"
    return DataError(
        path,
        f"refused to load: the file is a pickle and {what} (napari-invert loads weights only, "
        "torch.load(weights_only=True)); save the network with torch.save(model.state_dict(), path) "
        "or as .safetensors",
    )


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "weights file not found")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(path, f"unreadable PyTorch file, truncated or corrupt ({first[:120]})") from None


def load_tensor_file(path: str | Path) -> dict[str, Tensor]:
    """State dict (name -> tensor, on the CPU) from ``.safetensors`` or a torch file.

    A torch file may hold the state dict itself or nest it under one of
    :data:`WRAPPER_KEYS` (Lightning ``state_dict``, nnU-Net ``network_weights``...);
    a ``module.`` prefix on every key (``DataParallel``) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(path, f"unreadable safetensors file, truncated or corrupt ({exc})") from None
    else:
        state = load_torch_file(path)
    return _as_state_dict(state, path)


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def _as_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):  # cannot happen with weights_only, kept for safety
        obj = obj.state_dict()
    if not _is_state(obj) and isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if _is_state(obj.get(key)):
                obj = obj[key]
                break
    if not _is_state(obj):
        kind = type(obj).__name__
        keys = f" with keys {list(obj)[:5]}" if isinstance(obj, Mapping) else ""
        raise DataError(path, f"not a state dict (holds a {kind}{keys}); save model.state_dict()")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOW_KEYS])
    return shown + (", ..." if len(keys) > SHOW_KEYS else "")


def load_state_into(module: nn.Module, state: Mapping[str, Tensor], path: str | Path) -> None:
    """Copy ``state`` into ``module`` (strict); a mismatch names the file, the network
    class and the first missing / unexpected / wrongly shaped keys in one line."""
    path = Path(path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) (file vs network: {_first(shapes)})")
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the file ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_first(unexpected)})")
        raise DataError(
            path,
            f"weights do not fit {type(module).__name__} (wrong architecture or arguments?): "
            + "; ".join(parts),
        )
    with torch.no_grad():
        module.load_state_dict(dict(state), strict=True)
