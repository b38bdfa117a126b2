"""The Ray backend: every unit a Ray task with its own CPU / GPU resources.

``pip install 'napari-invert[cluster]'``. Connects to the cluster at ``address``
(``"auto"``: the one this machine belongs to, ``"HOST:PORT"``: that head node) or, with no
address, to the Ray instance this process already started, else starts a local one.
Units read and write the study folder directly, so on a cluster that folder must be on
storage every node mounts at the same path (NFS, Lustre, a cloud file system); only the
units' small summaries travel back. Progress (one bar of finished units) and failures are
collected on the driver; a failed unit does not stop the others, and a rerun skips every
step the study manifest records as finished (the same resume as a local run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_invert.errors import ConfigError
from napari_invert.execution.base import Unit, UnitFailed, call_unit

__all__ = ["RayExecutor", "import_ray"]


def import_ray() -> Any:
    """``import ray``, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("execution.backend 'ray' needs Ray: pip install 'napari-invert[cluster]'") from None
    return ray


def _remote_call(func: str, config: dict[str, Any], paths: dict[str, str], threads: int) -> Any:
    return call_unit(func, config, paths, threads)


class RayExecutor:
    """Run units as Ray tasks (``num_cpus=unit.cpus``, ``num_gpus=unit.gpus``).

    ``init_kwargs`` go to ``ray.init`` when this executor starts or joins Ray (for example
    ``num_cpus=2`` for a local instance, or a ``runtime_env``). A Ray instance this
    executor started is left running for later calls in the same process (``ray.shutdown()``
    ends it).
    """

    name = "ray"

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})

    def _ensure_ray(self) -> Any:
        import os

        ray = import_ray()
        if not ray.is_initialized():
            kwargs = {"ignore_reinit_error": True, "log_to_driver": False, **self.init_kwargs}
            if self.address is None and "runtime_env" not in kwargs:
                # A local instance: its workers import this very checkout (source trees too).
                import napari_invert

                root = os.path.dirname(os.path.dirname(os.path.abspath(napari_invert.__file__)))
                path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
                kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
            ray.init(address=self.address, **kwargs)
        return ray

    def map(self, units: Sequence[Unit], progress: bool = True, desc: str = "units") -> dict[str, Any]:
        from tqdm.auto import tqdm

        units = list(units)
        if not units:
            return {}
        ray = self._ensure_ray()
        remote = ray.remote(_remote_call)
        refs = {}
        for unit in units:
            task = remote.options(num_cpus=unit.cpus, num_gpus=unit.gpus, max_retries=0, name=unit.key)
            refs[task.remote(unit.func, unit.config, unit.paths, max(int(unit.cpus), 1))] = unit
        results: dict[str, Any] = {}
        failures: list[str] = []
        pending = list(refs)
        with tqdm(total=len(units), desc=desc, disable=not progress, unit="unit") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    unit = refs[ref]
                    try:
                        results[unit.key] = ray.get(ref)
                    except Exception as exc:  # RayTaskError wraps the unit's exception
                        cause = getattr(exc, "cause", None) or exc
                        failures.append(f"{unit.key}: {type(cause).__name__}: {cause}")
                    bar.update(1)
        if failures:
            raise UnitFailed("; ".join(failures))
        return results
