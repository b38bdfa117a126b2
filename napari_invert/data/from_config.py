"""Open the cohort a validated ``cohort:`` block names (study and audit alike)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_cohort(config: Any, demo_root: Path, progress: bool = True) -> tuple[Any, Path]:
    """``(Cohort, its path)`` for a :class:`~napari_invert.config.CohortConfig`.

    The ``demo`` kind is written first (to ``config.path``, else ``demo_root``; an existing
    complete demo cohort is reused); other kinds are read from ``config.path`` (layout only).
    """
    from napari_invert.data.cohort import Cohort

    if config.kind == "demo":
        from napari_invert.data.demo import make_demo_cohort

        path = config.path or demo_root
        make_demo_cohort(
            path,
            n_subjects=config.n_subjects or 40,
            seed=config.seed,
            voxel_mm=config.demo_voxel_mm,
            progress=progress,
        )
        return Cohort.from_path(path, kind="folder"), Path(path)
    return Cohort.from_path(config.path, kind=config.kind, n_subjects=config.n_subjects), Path(config.path)
