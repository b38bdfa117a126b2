"""Model checkpoints as safetensors (weights) plus JSON (everything else).

A checkpoint named ``stem`` is two files: ``stem.safetensors`` holds tensors only and
``stem.json`` holds the architecture description, training state and free metadata.
Neither format can execute code when loaded, unlike pickle (``torch.save``), so a
checkpoint received from someone else is safe to open.

Both files are written atomically; the JSON is written last and is the "commit" marker:
a checkpoint without its JSON is treated as absent. Each save stamps both files with the same
random ``save_id`` (in the safetensors header metadata and in the JSON), so new weights beside
an older description are never silently paired. A save writes the new description first as
``.stem.json.pending``, then the weights, then renames the pending description over the old
one; an interruption between the last two steps (Ctrl-C, a cancelled Ray task) leaves new
weights beside a pending description with the same ``save_id``, and :func:`load_checkpoint`
completes that save instead of refusing the pair. Any other mismatch is an error.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from napari_invert._io import atomic_path, read_json, write_json_atomic
from napari_invert.errors import CheckpointError, DataError

FORMAT_VERSION = 1

#: Key of the save stamp in the safetensors header metadata and in the JSON.
SAVE_ID_KEY = "save_id"


def checkpoint_paths(stem: str | Path) -> tuple[Path, Path]:
    """Return ``(weights_path, meta_path)`` for a checkpoint stem (suffixes stripped)."""
    stem = Path(stem)
    for suffix in (".safetensors", ".json"):
        if stem.name.endswith(suffix):
            stem = stem.with_name(stem.name[: -len(suffix)])
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def checkpoint_exists(stem: str | Path) -> bool:
    """True when both files of the checkpoint exist."""
    weights, meta = checkpoint_paths(stem)
    return weights.is_file() and meta.is_file()


def save_checkpoint(
    stem: str | Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> tuple[Path, Path]:
    """Save ``tensors`` (name -> tensor) and JSON-serialisable ``meta`` atomically.

    Tensors are made contiguous and moved to the CPU; shared storage is cloned because
    safetensors refuses aliased tensors.
    """
    weights_path, meta_path = checkpoint_paths(stem)
    clean = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    save_id = uuid.uuid4().hex
    pending = _pending_path(meta_path)
    write_json_atomic(pending, {"format_version": FORMAT_VERSION, **meta, SAVE_ID_KEY: save_id})
    with atomic_path(weights_path) as tmp:
        save_file(clean, str(tmp), metadata={SAVE_ID_KEY: save_id})
    try:
        os.replace(pending, meta_path)
    except FileNotFoundError:
        # a reader completed this save between the two renames (load_checkpoint): done
        if read_json(meta_path).get(SAVE_ID_KEY) != save_id:
            raise
    return weights_path, meta_path


def _pending_path(meta_path: Path) -> Path:
    """Where a save's description waits until its weights are in place."""
    return meta_path.with_name(f".{meta_path.name}.pending")


def _complete_interrupted_save(weights_path: Path, meta_path: Path, weights_id: str | None) -> dict | None:
    """The pending description of an interrupted save whose weights are already in place
    (same ``save_id``), now renamed over ``meta_path``; ``None`` when there is none."""
    pending = _pending_path(meta_path)
    if weights_id is None or not pending.is_file():
        return None
    try:
        meta = read_json(pending)
    except DataError:
        return None
    if not isinstance(meta, dict) or meta.get(SAVE_ID_KEY) != weights_id:
        return None
    os.replace(pending, meta_path)
    return meta


def _weights_save_id(weights_path: Path) -> str | None:
    with safe_open(str(weights_path), framework="pt") as handle:
        return (handle.metadata() or {}).get(SAVE_ID_KEY)


def load_checkpoint(
    stem: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_checkpoint`; returns ``(tensors, meta)``.

    Raises :class:`CheckpointError` naming the file when either part is missing or corrupt.
    """
    weights_path, meta_path = checkpoint_paths(stem)
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: checkpoint weights not found")
    try:
        meta = read_json(meta_path)
    except DataError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise CheckpointError(f"{meta_path}: not a napari-invert checkpoint description")
    try:
        weights_id = _weights_save_id(weights_path)
        tensors = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    meta_id = meta.get(SAVE_ID_KEY)
    if (meta_id is not None or weights_id is not None) and meta_id != weights_id:
        completed = _complete_interrupted_save(weights_path, meta_path, weights_id)
        if completed is None:
            raise CheckpointError(
                f"{weights_path}: weights and {meta_path.name} come from different saves (interrupted "
                "between the two writes?); delete both files to redo this step"
            )
        meta = completed
    # (a pending description that matches neither file is a save interrupted before its
    # weights were written: the old pair stands and the next save overwrites it)
    meta.pop(SAVE_ID_KEY, None)
    return tensors, meta


def load_module_checkpoint(
    stem: str | Path, kind: str, what: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any], str | Path]:
    """Load a saved module whose description has ``kind``, or a training checkpoint of one.

    Returns ``(tensors, meta, spec, source)``: ``meta`` is the JSON as stored; ``spec`` the
    module's description (``meta`` itself, or for a resumable training checkpoint, kind
    ``training_state``, its ``module`` entry, with ``tensors`` its ``model/`` weights without
    that prefix); ``source`` the JSON path, for messages. A description of another kind is a
    :class:`CheckpointError` "not ``what`` checkpoint" (``what``: e.g. ``"a segmenter"``).
    """
    tensors, meta = load_checkpoint(stem, device="cpu")
    source = Path(str(stem)).with_suffix(".json") if not str(stem).endswith(".json") else stem
    spec = meta
    if meta.get("kind") == "training_state":
        spec = meta.get("module", {})
        tensors = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    if spec.get("kind") != kind:
        raise CheckpointError(f"{source}: not {what} checkpoint (kind={spec.get('kind')!r})")
    return tensors, meta, spec, source


def module_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Return a module's parameters and buffers as a flat name -> tensor dict."""
    return dict(module.state_dict())


def load_module_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Any) -> None:
    """Load ``tensors`` into ``module`` strictly, with an error naming ``source`` on mismatch."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"{source}: weights do not fit the model ({first[0] if first else exc})"
        ) from None
