"""Tiny inputs shared by the test modules: a study config that runs in seconds on the demo
cohort, and synthetic head-like volumes.

* :data:`TINY_STUDY`: 6 demo subjects at 8 mm, 2 folds, U-Net + SegNet with 4-step trainings;
* :func:`with_cohort`: a deep copy of a config dict pointed at a cohort folder, with changes;
* :func:`demo_cohort_for`: the demo cohort such a config describes;
* :func:`blobs`: ellipsoids of random place, size and contrast with a bright core.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

TINY_STUDY: dict[str, Any] = {
    "name": "tiny",
    "cohort": {"kind": "demo", "n_subjects": 6, "seed": 3, "demo_voxel_mm": 8.0},
    "preprocess": {"voxel_mm": None, "variants": ["skull_stripped"]},
    "folds": 2,
    "holdout": 0,  # 6 subjects: no room for held-out non-members (tests/test_controls.py has them)
    "controls": {"untrained_victim": False},
    "segmenter": {"architectures": ["unet", "segnet"], "base_filters": 4, "levels": 2, "convs_per_level": 1},
    "segmenter_training": {"steps": 4, "batch_size": 2, "checkpoint_every": 2},
    "attack": {
        "taps": {"unet": ["bottleneck+skips"], "segnet": ["bottleneck+indices"]},
        "decoder_base_filters": 4,
        "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "augment": False},
    },
    "device": "cpu",
}


def with_cohort(config: dict[str, Any], cohort_dir: Path, **changes: Any) -> dict[str, Any]:
    """A deep copy of ``config`` reading its cohort from ``cohort_dir``, top-level keys replaced
    by ``changes`` (the caller validates it with ``parse_config``)."""
    data = copy.deepcopy(config)
    data["cohort"]["path"] = str(cohort_dir)
    data.update(changes)
    return data


def blobs(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth synthetic "heads" of shape ``(size,)*3``, float32 in about [0, 1.1]: an
    ellipsoid of random place/size/contrast with a bright core, plus N(0, 0.02) noise (the
    attacker's mean image is a poor guess of any one of them)."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1, 1, size, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))
    out = []
    for _ in range(n):
        centre = rng.uniform(-0.3, 0.3, 3).astype(np.float32)[:, None, None, None]
        radii = rng.uniform(0.4, 0.8, 3).astype(np.float32)[:, None, None, None]
        r = np.sqrt((((grid - centre) / radii) ** 2).sum(0))
        img = rng.uniform(0.3, 0.6) * (r < 1) + rng.uniform(0.2, 0.5) * (r < 0.5)
        out.append((img + rng.normal(0, 0.02, img.shape)).astype(np.float32))
    return out


def demo_cohort_for(config: dict[str, Any], root: Path) -> Path:
    """Write the demo cohort a config dict's ``cohort`` block describes (``n_subjects``,
    ``seed``, ``demo_voxel_mm``) into ``root`` and return ``root``."""
    from napari_invert.data.demo import make_demo_cohort

    cohort = config["cohort"]
    return make_demo_cohort(
        root,
        n_subjects=cohort["n_subjects"],
        seed=cohort["seed"],
        voxel_mm=cohort["demo_voxel_mm"],
        progress=False,
    )
