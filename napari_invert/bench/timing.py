"""Timing, memory and process-isolation helpers shared by the benchmark cases.

Conventions
-----------
* Every figure is the **median** of ``repeats`` timed runs that follow ``warmup``
  untimed runs (:func:`time_calls`); min, max and every run are kept too.
* A comparison is a **speed-up** ``reference_seconds / ours_seconds`` from timings taken
  in the same run (``> 1``: ours is faster).
* Looped references over a whole ``N x M`` matrix are timed on a few pairs and
  **extrapolated** (:func:`extrapolate`): the entry says so (``extrapolated: true``,
  ``from_pairs``).
* Peak memory on the CPU: ``peak_increment_bytes`` is the peak resident set size during
  the measured call minus the resident set size just before it. On Linux the peak is the
  kernel's own high-water mark ``VmHWM``, reset at the start of the call (exact; see
  :class:`PeakMemory`); elsewhere RSS is sampled every few milliseconds
  (:class:`RssSampler`; may miss very short spikes). On CUDA it is
  ``torch.cuda.max_memory_allocated`` minus the memory allocated before the call (tensors
  only, not the caching allocator's reserve or the CUDA context). ``tracemalloc`` is
  useless here: it does not see torch's allocations.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------
@dataclass
class Stats:
    """Wall-clock seconds of repeated runs of one operation."""

    runs_s: list[float]
    warmup: int = 0
    extrapolated: bool = False
    from_pairs: int | None = None
    per_pair_s: float | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.runs_s))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``median_s``, ``min_s``, ``max_s``, ``runs_s``, ``repeats``, ``warmup``,
        ``extrapolated`` (+ ``from_pairs``, ``per_pair_s``, ``note`` when set)."""
        out: dict[str, Any] = {
            "median_s": self.median_s,
            "min_s": float(min(self.runs_s)),
            "max_s": float(max(self.runs_s)),
            "runs_s": [float(r) for r in self.runs_s],
            "repeats": len(self.runs_s),
            "warmup": self.warmup,
            "extrapolated": self.extrapolated,
        }
        if self.from_pairs is not None:
            out["from_pairs"] = self.from_pairs
        if self.per_pair_s is not None:
            out["per_pair_s"] = self.per_pair_s
        if self.note:
            out["note"] = self.note
        out.update(self.extra)
        return out


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Temporarily use ``n`` torch CPU threads (``None``: leave as is); yields the count."""
    import torch

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def thread_limit(n: int | None) -> Iterator[dict[str, Any]]:
    """Limit torch's CPU threads and, with ``threadpoolctl`` installed, the BLAS / OpenMP
    pools of NumPy and SciPy to ``n`` (``None``: change nothing).

    Yields ``{"threads": n or None, "torch_threads": ..., "blas_limited": bool}``.
    """
    with contextlib.ExitStack() as stack:
        info: dict[str, Any] = {"threads": n, "blas_limited": False}
        info["torch_threads"] = stack.enter_context(torch_threads(n))
        if n is not None:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                pass
            else:
                stack.enter_context(threadpool_limits(limits=int(n)))
                info["blas_limited"] = True
        yield info


def cuda_sync(device: Any) -> None:
    """Wait for queued CUDA work on ``device`` (no-op on the CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_calls(
    calls: Sequence[Callable[[], T]],
    warmup_calls: Sequence[Callable[[], Any]] = (),
    device: Any = "cpu",
) -> tuple[Stats, list[T]]:
    """Run every warm-up call untimed, then time each of ``calls`` once.

    The calls may differ (e.g. one pair each) but should cost the same. CUDA work is
    synchronised after every call. Returns the :class:`Stats` and the calls' results.
    """
    if not calls:
        raise ValueError("time_calls: nothing to time")
    for call in warmup_calls:
        call()
    cuda_sync(device)
    runs: list[float] = []
    results: list[T] = []
    for call in calls:
        t0 = time.perf_counter()
        results.append(call())
        cuda_sync(device)
        runs.append(time.perf_counter() - t0)
    return Stats(runs, warmup=len(warmup_calls)), results


def repeat_call(
    call: Callable[[], T], repeats: int, warmup: int, device: Any = "cpu"
) -> tuple[Stats, list[T]]:
    """:func:`time_calls` with the same call ``warmup`` + ``repeats`` times."""
    return time_calls([call] * max(repeats, 1), [call] * max(warmup, 0), device)


def extrapolate(per_pair: Stats, n_pairs: int) -> Stats:
    """Matrix cost from the per-pair timings: every run x ``n_pairs`` (flagged as such)."""
    return Stats(
        [r * n_pairs for r in per_pair.runs_s],
        warmup=per_pair.warmup,
        extrapolated=True,
        from_pairs=len(per_pair.runs_s),
        per_pair_s=per_pair.median_s,
        note=f"extrapolated: median of {len(per_pair.runs_s)} timed pair(s) x {n_pairs} pairs",
    )


def speedup(reference: Stats | float, ours: Stats | float) -> float | None:
    """``reference / ours`` (median seconds); ``None`` if either is not a positive number."""
    ref = reference.median_s if isinstance(reference, Stats) else float(reference)
    own = ours.median_s if isinstance(ours, Stats) else float(ours)
    if not (math.isfinite(ref) and math.isfinite(own)) or ref <= 0 or own <= 0:
        return None
    return ref / own


def median_of_steps(cumulative_s: Sequence[float], warmup: int) -> Stats:
    """Per-step seconds from a cumulative clock (a training curve), first ``warmup`` dropped."""
    prev = 0.0
    steps: list[float] = []
    for c in cumulative_s:
        steps.append(float(c) - prev)
        prev = float(c)
    if not steps:
        raise ValueError("median_of_steps: no steps")
    warmup = min(max(warmup, 0), len(steps) - 1)
    return Stats(steps[warmup:], warmup=warmup)


# --------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------
def current_rss_bytes() -> int | None:
    """Resident set size of this process now (``/proc/self/statm``; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing or unsupported platform
        return None


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0).

    Writes ``5`` to ``/proc/self/clear_refs``. Returns False where unsupported.
    """
    if _proc_status_kib("VmHWM") is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size since start or the last :func:`reset_peak_rss`
    (``VmHWM`` of ``/proc/self/status``), in bytes; ``None`` where unsupported."""
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib * 1024


class RssSampler:
    """Context manager: peak resident set size while the body runs, by sampling.

    ``peak_bytes`` and ``start_bytes`` are set on exit (``None`` when RSS is unreadable).
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.start_bytes: int | None = None
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = current_rss_bytes()
            if rss is not None and (self.peak_bytes is None or rss > self.peak_bytes):
                self.peak_bytes = rss
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        gc.collect()
        self.start_bytes = current_rss_bytes()
        self.peak_bytes = self.start_bytes
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = current_rss_bytes()
        if rss is not None and (self.peak_bytes is None or rss > self.peak_bytes):
            self.peak_bytes = rss


class PeakMemory:
    """Context manager measuring the peak memory increment of its body.

    ``method`` (chosen automatically):

    * ``cuda_max_memory_allocated`` on a CUDA device: peak tensor allocation
      (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``);
    * ``vmhwm`` on Linux: the kernel's exact peak RSS (``VmHWM``), reset at entry through
      ``/proc/self/clear_refs`` — resettable, so it needs no fresh process. (``ru_maxrss``
      is *not* used: in a spawned child it starts at the parent's RSS, which Linux carries
      over the ``fork``/``exec``.)
    * ``rss_sampling`` elsewhere: :class:`RssSampler` (may miss very short spikes).

    After exit, :meth:`to_dict` gives ``peak_increment_bytes``, ``peak_bytes``,
    ``baseline_bytes`` and ``method``.
    """

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.method = "cuda_max_memory_allocated"
        elif peak_rss_bytes() is not None and current_rss_bytes() is not None:
            self.method = "vmhwm"
        else:
            self.method = "rss_sampling"
        self.baseline: int | None = None
        self.peak: int | None = None
        self._sampler: RssSampler | None = None

    def __enter__(self) -> PeakMemory:
        import torch

        gc.collect()
        if self.method.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = int(torch.cuda.memory_allocated(self.device))
        elif self.method == "vmhwm" and reset_peak_rss():
            self.baseline = current_rss_bytes()
        else:
            self.method = "rss_sampling"
            self._sampler = RssSampler().__enter__()
            self.baseline = self._sampler.start_bytes
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.method.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        elif self.method == "vmhwm":
            self.peak = peak_rss_bytes()
        else:
            assert self._sampler is not None
            self._sampler.__exit__(*exc)
            self.peak = self._sampler.peak_bytes

    def to_dict(self) -> dict[str, Any]:
        """``peak_increment_bytes`` (peak - baseline, >= 0), ``peak_bytes``, ``baseline_bytes``,
        ``method``."""
        inc = None
        if self.peak is not None and self.baseline is not None:
            inc = max(int(self.peak) - int(self.baseline), 0)
        return {
            "peak_increment_bytes": inc,
            "peak_bytes": self.peak,
            "baseline_bytes": self.baseline,
            "method": self.method,
        }


# --------------------------------------------------------------------------------------
# isolation
# --------------------------------------------------------------------------------------
def _child_entry(
    func: Callable[..., Any], kwargs: dict[str, Any], threads: int | None, env: dict[str, str]
) -> Any:
    os.environ.update(env)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return func(**kwargs, isolated=True)


def run_isolated(
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    isolate: bool,
    torch_threads: bool = True,
    env: dict[str, str] | None = None,
) -> Any:
    """Call ``func(**kwargs, isolated=...)`` in a fresh spawned process, or in this one.

    A fresh process per case shares no state with the others (allocator caches, thread
    pools, memory the C allocator kept from an earlier case).
    ``torch_threads``: give the child this process's torch intra-op thread count (False:
    do not import torch for that). ``env``: variables set in the child before ``func``
    runs (e.g. ITK's thread count, read when ANTs is first used). ``func`` must be a
    module-level function. Exceptions in the child are re-raised here.
    """
    if not isolate:
        return func(**kwargs, isolated=False)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = None
    if torch_threads:
        import torch

        threads = torch.get_num_threads()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_child_entry, func, kwargs, threads, dict(env or {})).result()
