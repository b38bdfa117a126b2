"""Describe the machine a benchmark ran on (CPU, memory, GPU, library versions, load).

Everything here is read locally (``/proc``, ``os``, ``torch``, package metadata); nothing
touches the network. Values that cannot be determined are ``None``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distribution names whose versions are recorded (key: how the report names them).
PACKAGES: dict[str, str] = {
    "napari_invert": "napari-invert",
    "torch": "torch",
    "monai": "monai",
    "skimage": "scikit-image",
    "antspyx": "antspyx",
    "numpy": "numpy",
    "scipy": "scipy",
    "nibabel": "nibabel",
}


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    path = Path("/proc/cpuinfo")
    if path.is_file():
        try:
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
        except OSError:
            pass
    return platform.processor() or None


def usable_cores() -> int | None:
    """CPU cores this process may run on (affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def total_ram_bytes() -> int | None:
    """Physical memory in bytes (``/proc/meminfo`` ``MemTotal`` or ``sysconf``)."""
    path = Path("/proc/meminfo")
    if path.is_file():
        try:
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where unsupported)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages in :data:`PACKAGES` plus Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


#: Environment variables that change how many threads the numeric libraries use.
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


def thread_pools() -> list[dict[str, Any]]:
    """BLAS / OpenMP thread pools loaded in this process (``threadpoolctl``, if installed)."""
    try:
        import numpy  # noqa: F401  (load numpy's BLAS so that it is listed)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads")
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def gpu_info(device: str) -> dict[str, Any] | None:
    """Name, memory and CUDA/cuDNN versions of the CUDA device ``device`` (``None`` on CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "name": torch.cuda.get_device_name(index),
        "index": index,
        "memory_bytes": int(props.total_memory),
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "count": torch.cuda.device_count(),
    }


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """Everything needed to interpret the timings of one run.

    Returns a JSON-ready dict: ``cpu_model``, ``logical_cpus``, ``usable_cores``,
    ``torch_threads``, ``ram_bytes``, ``gpu`` (``None`` without CUDA or when the benchmark
    runs on the CPU; ``gpu_available`` says whether one exists), ``thread_env`` and
    ``thread_pools`` (BLAS/OpenMP libraries and their thread counts), ``platform``,
    ``versions`` and ``load_average`` (1/5/15 min) when described.
    """
    import torch

    available = torch.cuda.is_available()
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "ram_bytes": total_ram_bytes(),
        "gpu": gpu_info(device),
        "gpu_available": available,
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if available
        else [],
        "thread_env": {k: os.environ.get(k) for k in THREAD_ENV},
        "thread_pools": thread_pools(),
        "platform": platform.platform(),
        "python_executable": sys.executable,
        "versions": package_versions(),
        "load_average": load_average(),
        "described_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def format_bytes(n: float | None) -> str:
    """``1536 -> '1.5 KiB'``; ``None -> 'n/a'``."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns
