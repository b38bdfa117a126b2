"""The local backend: a pool of spawned processes on this machine (what ``jobs:`` does)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_invert.execution.base import Unit, UnitFailed, call_unit

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Run units in ``jobs`` spawned processes (``jobs=1``: one after another, in this process).

    Processes are spawned, not forked (ITK thread pools and torch do not survive a fork),
    so scripts need the usual ``if __name__ == "__main__":`` guard. Each unit gets
    ``max(1, int(unit.cpus))`` torch threads. GPU shares are not enforced locally: every
    process sees every device.
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs = int(jobs)

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
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from multiprocessing import get_context

        results: dict[str, Any] = {}
        failures: list[str] = []
        with ProcessPoolExecutor(
            max_workers=min(self.jobs, len(units)), mp_context=get_context("spawn")
        ) as pool:
            futures = {
                pool.submit(call_unit, u.func, u.config, u.paths, max(int(u.cpus), 1)): u for u in units
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    unit = futures[future]
                    if future.cancelled():  # never started after an earlier failure
                        continue
                    try:
                        results[unit.key] = future.result()
                    except Exception as exc:
                        failures.append(f"{unit.key}: {type(exc).__name__}: {exc}")
                        if not failures[1:]:  # first failure: queued units are not started
                            for other in pending:
                                other.cancel()
                    bar.update(1)
        if failures:
            raise UnitFailed("; ".join(failures))
        return results


def _run_here(unit: Unit) -> Any:
    import torch

    old = torch.get_num_threads()
    try:
        return call_unit(unit.func, unit.config, unit.paths, max(int(unit.cpus), 1))
    except Exception as exc:
        raise UnitFailed(f"{unit.key}: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.set_num_threads(old)
