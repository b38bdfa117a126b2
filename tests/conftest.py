"""Shared fixtures: the real data folder (``$NAPARI_INVERT_DATA`` or ``../shared/data``).

Tests that need the data skip, with the reason, only when the folder is truly absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_invert.config import default_data_root

# One thread per process: the suite's volumes are tiny, and on a 2-core CI machine extra
# OpenMP threads only contend (set before torch is imported; subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder; skips only if it does not exist at all."""
    root = default_data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is absent (set NAPARI_INVERT_DATA to its location)")
    return root


def _dataset(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_dir():
        pytest.skip(f"dataset folder {path} is absent from the shared data folder")
    return path


@pytest.fixture(scope="session")
def lpba40(data_root: Path) -> Path:
    """``<data>/lpba40``: 40 skull-stripped subjects, 160x192x160 at 1 mm, 56 structures."""
    return _dataset(data_root, "lpba40")


@pytest.fixture(scope="session")
def ixi(data_root: Path) -> Path:
    """``<data>/ixi_hh_2mm``: 40 full-head subjects, 120x120x90 at 2 mm, 148 structures."""
    return _dataset(data_root, "ixi_hh_2mm")
