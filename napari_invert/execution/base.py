"""The unit of work and the executor protocol shared by every backend."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from napari_invert.errors import ConfigError, NapariInvertError

__all__ = ["Executor", "Unit", "UnitFailed", "call_unit", "make_executor"]


class UnitFailed(NapariInvertError):
    """A unit of work raised; the message names the unit and the original error."""


@dataclass(frozen=True)
class Unit:
    """One independent piece of work.

    Attributes
    ----------
    key
        Unique, human-readable name (``victim:skull_stripped:fold0:unet``); used in
        progress, errors and to order results.
    func
        ``"package.module:function"`` of a module-level function ``f(config, paths)``.
    config
        JSON-ready dict (checked: it must survive ``json.dumps``).
    paths
        ``{name: path}`` as strings (files and folders on storage the workers see).
    cpus
        CPU cores the unit uses (> 0; also its torch thread count, at least 1).
    gpus
        GPUs the unit uses (0 to 1 for a share of one device, or a whole number).
    """

    key: str
    func: str
    config: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if ":" not in self.func:
            raise ValueError(f"unit {self.key}: func must be 'module:function', got {self.func!r}")
        if not (self.cpus > 0 and math.isfinite(self.cpus)):
            raise ValueError(f"unit {self.key}: cpus must be > 0, got {self.cpus}")
        if self.gpus < 0 or (self.gpus > 1 and self.gpus != int(self.gpus)):
            raise ValueError(f"unit {self.key}: gpus must be in [0, 1] or a whole number, got {self.gpus}")
        try:
            json.dumps(self.config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"unit {self.key}: config is not JSON-ready ({exc})") from None
        if not all(isinstance(v, str) for v in self.paths.values()):
            raise ValueError(f"unit {self.key}: paths must be strings")

    def resolve(self) -> Callable[[dict[str, Any], dict[str, str]], Any]:
        """Import and return the unit's function."""
        module, _, name = self.func.partition(":")
        return getattr(importlib.import_module(module), name)


def call_unit(func: str, config: dict[str, Any], paths: dict[str, str], threads: int) -> Any:
    """Run one unit in the current process with ``threads`` torch CPU threads.

    This is what every backend executes (in a spawned process or a Ray worker). ITK (ANTs)
    reads its thread count once per process, at its first filter, so it is set here, before
    the unit runs. Registration units need one ITK thread to be reproducible and pin it
    themselves (:mod:`napari_invert.metrics.registration.threads`), also in a worker that an
    earlier unit left with ITK multi-threaded.
    """
    import os

    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(int(threads), 1))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch = None
    if torch is not None:
        torch.set_num_threads(max(int(threads), 1))
    module, _, name = func.partition(":")
    return getattr(importlib.import_module(module), name)(config, paths)


def notice(message: str) -> None:
    """One ``napari-invert: <message>`` line on stderr, at once (interrupts, cancellations)."""
    import sys

    print(f"napari-invert: {message}", file=sys.stderr, flush=True)


class Executor(Protocol):
    """Runs units; ``map`` returns ``{unit.key: result}`` once every unit finished."""

    name: str

    def map(self, units: Sequence[Unit], progress: bool = True, desc: str = "units") -> dict[str, Any]:
        """Run every unit (in any order, concurrently); raise :class:`UnitFailed` on failure."""
        ...


def make_executor(
    backend: str = "local",
    jobs: int = 1,
    address: str | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> Executor:
    """The executor for ``backend``.

    ``local``: ``jobs`` spawned processes (``jobs=1``: in this process). ``ray``: Ray tasks
    on ``address`` (``None``: join a running Ray instance started by this process, else
    start a local one; ``"auto"``: the cluster this machine belongs to; ``"HOST:PORT"``: that
    cluster's head); ``init_kwargs`` go to ``ray.init`` (e.g. ``num_cpus=2``).
    """
    if backend == "local":
        from napari_invert.execution.local import LocalExecutor

        return LocalExecutor(jobs=jobs)
    if backend == "ray":
        from napari_invert.execution.ray_backend import RayExecutor

        return RayExecutor(address=address, init_kwargs=init_kwargs)
    raise ConfigError(f"execution.backend: unknown backend '{backend}' (choose 'local' or 'ray')")
