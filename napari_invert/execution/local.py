"""The local backend: a pool of spawned processes on this machine (what ``jobs:`` does)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_invert.execution.base import Unit, UnitFailed, call_unit, notice

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Run units in ``jobs`` spawned processes (``jobs=1``: one after another, in this process).

    Processes are spawned, not forked (ITK thread pools and torch do not survive a fork),
    so scripts need the usual ``if __name__ == "__main__":`` guard. Each unit gets
    ``max(1, int(unit.cpus))`` torch threads. GPU shares are not enforced locally: every
    process sees every device.

    Interrupting the driver (Ctrl-C, SIGINT) drops the units not started yet, interrupts
    the running ones and waits until none runs (:func:`stop_units`; ``grace_s`` seconds
    before a worker process is killed); a rerun resumes from what was finished and from
    the training checkpoints on disk, as on Ray.
    """

    name = "local"

    def __init__(self, jobs: int = 1, grace_s: float = 20.0) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = int(jobs)
        self.grace_s = float(grace_s)

    def map(self, units: Sequence[Unit], progress: bool = True, desc: str = "units") -> dict[str, Any]:
        from tqdm.auto import tqdm

        units = list(units)
        results: dict[str, Any] = {}
        bar = tqdm(total=len(units), desc=desc, disable=not progress, unit="unit")
        try:
            if self.jobs == 1 or len(units) <= 1:
                for unit in units:
                    results[unit.key] = _run_here(unit)
                    bar.update(1)
                return results
            results.update(self._pool(units, bar))
        finally:
            bar.close()
        return results

    def _pool(self, units: list[Unit], bar: Any) -> dict[str, Any]:
        """Units on ``jobs`` spawned processes; at most one unit per process is submitted at
        a time, so a unit not yet handed to a process can always be cancelled."""
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from multiprocessing import get_context

        results: dict[str, Any] = {}
        failures: list[str] = []
        queued = list(reversed(units))  # pop() takes the next unit in order
        running: dict[Any, Unit] = {}
        pool = ProcessPoolExecutor(
            max_workers=min(self.jobs, len(units)), mp_context=get_context("spawn"), initializer=_idle_worker
        )
        try:
            while queued or running:
                while queued and len(running) < self.jobs and not failures:
                    u = queued.pop()
                    threads = max(int(u.cpus), 1)
                    running[pool.submit(_interruptible_call, u.func, u.config, u.paths, threads)] = u
                if not running:  # after a failure the units not started never start
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    unit = running.pop(future)
                    try:
                        results[unit.key] = future.result()
                    except Exception as exc:
                        failures.append(f"{unit.key}: {type(exc).__name__}: {exc}")
                    bar.update(1)
        except KeyboardInterrupt:
            names = {future: unit.key for future, unit in running.items()}
            stop_units(pool, names, [u.key for u in reversed(queued)], self.grace_s)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failures:
            raise UnitFailed("; ".join(failures))
        return results


def stop_units(pool: Any, running: dict[Any, str], queued: list[str], grace_s: float = 20.0) -> None:
    """After the driver was interrupted: drop the queued units and stop the running ones.

    ``running``: ``{future: name}`` of the units in the pool's processes; ``queued``: the
    names of those not started (any pool of work items can use it, not only :class:`Unit`). Each process gets
    SIGINT, so its unit stops as on a terminal's Ctrl-C (files being written are abandoned:
    every result is written through a temporary file and renamed; training checkpoints
    already on disk stay for the resume). Processes whose unit still runs after ``grace_s``
    seconds (or at a second Ctrl-C) are killed. Prints one line per step to stderr.
    """
    import contextlib
    import os
    import signal
    from concurrent.futures import wait

    if not (running or queued):
        return
    keys = ", ".join([*running.values(), *queued])
    notice(
        f"interrupted: cancelling {len(running) + len(queued)} unfinished unit(s) "
        f"({len(running)} running, {len(queued)} not started): {keys}"
    )
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:  # idle workers ignore it (see _idle_worker)
        with contextlib.suppress(OSError, TypeError):  # already gone
            os.kill(process.pid, signal.SIGINT)
    try:
        _, left = wait(list(running), timeout=grace_s)
    except KeyboardInterrupt:  # a second Ctrl-C: do not wait
        left = set(running)
    if left:
        notice(f"{len(left)} unit(s) still running: killing the worker processes")
        for process in processes:
            with contextlib.suppress(OSError, AttributeError):
                process.kill()
    notice("no unit of this run is running any more")


def _idle_worker() -> None:
    """Pool initializer: an idle worker ignores SIGINT (a terminal's Ctrl-C reaches every
    process of the group; only a running unit is to stop, the pool itself shuts down)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interruptible_call(func: str, config: dict[str, Any], paths: dict[str, str], threads: int) -> Any:
    """:func:`call_unit` in a pool process, with SIGINT raising KeyboardInterrupt in the unit."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return call_unit(func, config, paths, threads)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_here(unit: Unit) -> Any:
    import torch

    old = torch.get_num_threads()
    try:
        return call_unit(unit.func, unit.config, unit.paths, max(int(unit.cpus), 1))
    except Exception as exc:
        raise UnitFailed(f"{unit.key}: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.set_num_threads(old)
