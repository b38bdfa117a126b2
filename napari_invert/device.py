"""Choosing the compute device, CPU thread count and mixed precision.

Everything that trains or runs a network takes a :class:`torch.device` obtained from
:func:`resolve_device`. On CUDA, forward passes run under bfloat16 autocast
(:func:`autocast`); losses are computed in float32. On the CPU everything is float32
(no autocast), which keeps CPU runs bit-reproducible.
"""

from __future__ import annotations

import contextlib
import os
from typing import Literal

import torch

from napari_invert.errors import ConfigError

DeviceSpec = Literal["auto", "cpu", "cuda"]


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` (or a device) into a :class:`torch.device`.

    ``auto`` picks the first CUDA GPU when one is usable, else the CPU. Asking for CUDA
    on a machine without a usable GPU raises :class:`~napari_invert.errors.ConfigError`
    (rather than silently falling back to a CPU run that would take far longer).
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', got {spec!r}")
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: '{spec}' was requested but no CUDA GPU is available "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                "use device: auto or cpu"
            )
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device: '{spec}' does not exist ({torch.cuda.device_count()} CUDA device(s))")
        return device
    raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', got '{spec}'")


def set_threads(n: int | None) -> int:
    """Set the number of CPU threads torch uses for intra-op parallelism.

    ``None`` leaves the current setting alone. Returns the number now in effect.
    Also sets ``OMP_NUM_THREADS`` for child processes started later.
    """
    if n is not None:
        if n < 1:
            raise ConfigError(f"num_threads: must be >= 1, got {n}")
        torch.set_num_threads(int(n))
        os.environ["OMP_NUM_THREADS"] = str(int(n))
    return torch.get_num_threads()


def uses_autocast(device: torch.device | str) -> bool:
    """True when :func:`autocast` enables bfloat16 mixed precision on ``device``."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Mixed-precision context: bfloat16 autocast on CUDA, a no-op on the CPU.

    bfloat16 has float32's exponent range, so no gradient scaler is needed. GPUs
    without bfloat16 support run in float32.
    """
    if uses_autocast(device):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure_backends(device: torch.device | str) -> None:
    """Speed settings for a device: cuDNN autotuning and TF32 matmuls on CUDA; nothing on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def describe_device(device: torch.device | str) -> str:
    """One-line human description, e.g. ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H100, bf16)``."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        return f"cuda:{index} ({name}{', bf16 autocast' if uses_autocast(device) else ''})"
    return f"{device.type} ({torch.get_num_threads()} threads)"
