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


# -- small study folders for the napari GUI tests (tests/test_widgets_*.py) ---------------------
@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 subjects, 2 folds, U-Net + SegNet reconstructions; not evaluated."""
    from gui_helpers import make_gui_study

    return make_gui_study(tmp_path_factory.mktemp("study") / "study", evaluated=False)


@pytest.fixture(scope="module")
def evaluated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same layout with a fake evaluation (metrics.csv, matrices, deformation maps)."""
    from gui_helpers import make_gui_study

    return make_gui_study(tmp_path_factory.mktemp("evaluated") / "study", evaluated=True)


@pytest.fixture
def trainable_dir(tmp_path: Path) -> Path:
    """A study with (untrained) segmenter checkpoints, for the Attack widget."""
    pytest.importorskip("torch")
    from gui_helpers import make_gui_study

    return make_gui_study(tmp_path / "study", with_segmenters=True, evaluated=True)


# -- the evaluated synthetic study the report tests share (tests/test_report_*.py) --------------
@pytest.fixture(scope="session")
def report_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """``(root, EvaluationSummary)`` of ``report_helpers.make_report_study`` (read-only)."""
    from report_helpers import make_report_study

    return make_report_study(tmp_path_factory.mktemp("study") / "s")


# -- Ray on this machine (tests/test_execution.py, tests/test_evaluate_backends.py) -----------
@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with 2 CPUs (no cluster), shut down after the module."""
    ray = pytest.importorskip("ray", reason="the [cluster] extra (Ray) is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
