"""The Ray backend: every unit a Ray task with its own CPU / GPU resources.

``pip install 'napari-invert[cluster]'``. Connects to the cluster at ``address``
(``"auto"``: the one this machine belongs to, ``"HOST:PORT"``: that head node) or, with no
address, to the Ray instance this process already started, else starts a local one.
Units read and write the study folder directly, so on a cluster that folder must be on
storage every node mounts at the same path (NFS, Lustre, a cloud file system); only the
units' small summaries travel back. Progress (one bar of finished units) and failures are
collected on the driver; a failed unit does not stop the others, and a rerun skips every
step the study manifest records as finished (the same resume as a local run).

Interrupting the driver (Ctrl-C, SIGINT) cancels the run's unfinished tasks and waits
until none runs (:func:`cancel_tasks`); a rerun resumes from what was finished and from
the training checkpoints on disk. The workers of a local instance started here run at the
driver's priority (Ray's default is nice 15, see :data:`WORKER_NICENESS_ENV`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_invert.errors import ConfigError
from napari_invert.execution.base import Unit, UnitFailed, call_unit, notice

__all__ = ["RayExecutor", "cancel_tasks", "import_ray"]


#: Read by a Ray instance when it starts: the niceness of its worker processes (Ray: 15).
WORKER_NICENESS_ENV = "RAY_worker_niceness"


def import_ray() -> Any:
    """``import ray``, or a ConfigError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("execution.backend 'ray' needs Ray: pip install 'napari-invert[cluster]'") from None
    return ray


def cancel_tasks(ray: Any, refs: Sequence[Any], keys: Sequence[str], grace_s: float = 20.0) -> None:
    """Cancel Ray tasks after the driver was interrupted, and wait until none runs.

    Queued tasks are dropped. Running ones first get a KeyboardInterrupt in their thread
    (``ray.cancel``), so they stop as a local process does on Ctrl-C: files being written
    are abandoned (every result is written through a temporary file and renamed, so none is
    left half-written) and training checkpoints already on disk stay for the resume. A task
    still running after ``grace_s`` seconds (stuck in native code) is killed with its worker
    process (``force=True``). Prints one line per step to stderr.
    """
    refs = list(refs)
    if not refs:
        return
    notice(f"interrupted: cancelling {len(refs)} unfinished Ray task(s): {', '.join(keys)}")
    left = _cancel_and_wait(ray, refs, force=False, grace_s=grace_s)
    if left:
        notice(f"{len(left)} Ray task(s) still running: killing their worker processes")
        left = _cancel_and_wait(ray, left, force=True, grace_s=grace_s)
    if left:  # pragma: no cover - Ray did not confirm the kill
        notice(f"Ray did not confirm the end of {len(left)} task(s)")
    else:
        notice("no Ray task of this run is running any more")


def _cancel_and_wait(ray: Any, refs: list[Any], force: bool, grace_s: float) -> list[Any]:
    """Cancel ``refs`` (``force``: kill their worker processes) and wait up to ``grace_s``
    seconds for them to end; return those still running (all of them after another Ctrl-C,
    which stops the wait)."""
    for ref in refs:
        _cancel(ray, ref, force=force)
    try:
        _, left = ray.wait(refs, num_returns=len(refs), timeout=grace_s)
    except KeyboardInterrupt:  # a second Ctrl-C: do not wait
        left = refs
    return list(left)


def _cancel(ray: Any, ref: Any, force: bool) -> None:
    import contextlib

    with contextlib.suppress(Exception):  # already finished, or its worker already gone
        ray.cancel(ref, force=force)


def _remote_call(func: str, config: dict[str, Any], paths: dict[str, str], threads: int) -> Any:
    return call_unit(func, config, paths, threads)


class RayExecutor:
    """Run units as Ray tasks (``num_cpus=unit.cpus``, ``num_gpus=unit.gpus``).

    ``init_kwargs`` go to ``ray.init`` when this executor starts or joins Ray (for example
    ``num_cpus=2`` for a local instance, or a ``runtime_env``). A Ray instance this
    executor started is left running for later calls in the same process (``ray.shutdown()``
    ends it). An interrupted driver (Ctrl-C, SIGINT) cancels its outstanding tasks before
    it stops (:func:`cancel_tasks`, ``grace_s`` seconds for running ones to stop cleanly).
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, init_kwargs: dict[str, Any] | None = None, grace_s: float = 20.0
    ) -> None:
        self.address = address
        self.init_kwargs = dict(init_kwargs or {})
        self.grace_s = float(grace_s)

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
            if self.address is None:
                # Ray starts its workers at nice 15 (to keep its own services responsive); a
                # local instance's workers ARE the study, so they run at this process's
                # priority (on a busy shared machine nice-15 units barely get a core).
                os.environ.setdefault(WORKER_NICENESS_ENV, "0")
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
            try:
                while pending:
                    # a timeout hands control back to the interpreter every second, so a
                    # Ctrl-C is seen while a task runs (a blocking wait deferred it)
                    done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                    for ref in done:
                        unit = refs[ref]
                        try:
                            results[unit.key] = ray.get(ref)
                        except Exception as exc:  # RayTaskError wraps the unit's exception
                            cause = getattr(exc, "cause", None) or exc
                            failures.append(f"{unit.key}: {type(cause).__name__}: {cause}")
                        bar.update(1)
            except KeyboardInterrupt:
                cancel_tasks(ray, pending, [refs[r].key for r in pending], self.grace_s)
                raise
        if failures:
            raise UnitFailed("; ".join(failures))
        return results
