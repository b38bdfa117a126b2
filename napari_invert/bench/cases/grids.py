"""The model grids of the sample configurations (what the networks actually see).

A :class:`Grid` is one study configuration's network input: the grid shape after
preprocessing (crop to the union of brain masks / heads, pad to a multiple of
``pool_size ** levels``), the number of classes, and the fold sizes (private images per
segmenter, attack images per decoder). Shapes come, in order of preference, from

1. a finished study folder of that configuration (``cohort.json``: the exact grid),
2. :func:`napari_invert.data.prepare.prepare_cohort` on the first few subjects (the union
   window of a few subjects can be one multiple smaller than that of all 40; the source
   string says how many were used),
3. a documented fallback when the data are absent.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert.config import StudyConfig

__all__ = ["Grid", "demo_grid", "find_sample_config", "grid_from_study", "quick_cpu_grid", "tiny_grid"]

#: Shape used for quick_cpu when LPBA40 is absent (LPBA40 at 3 mm, 2-subject window).
FALLBACK_QUICK_SHAPE = (56, 64, 48)
#: Classes of LPBA40 with ``restrict_to_mask`` (55 structures + background).
FALLBACK_QUICK_CLASSES = 56


@dataclass
class Grid:
    """One configuration's network input (see the module docstring)."""

    name: str
    config: StudyConfig
    shape: tuple[int, int, int]
    n_classes: int
    n_private: int
    n_attack: int
    source: str
    notes: list[str] = field(default_factory=list)
    #: a few prepared ``(image, mask)`` pairs on this grid (registration inputs); not saved
    samples: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    #: voxel size in mm of the grid (``None``: native / unknown)
    voxel_mm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the full config)."""
        seg = self.config.segmenter
        return {
            "name": self.name,
            "shape": list(self.shape),
            "n_classes": self.n_classes,
            "n_private": self.n_private,
            "n_attack": self.n_attack,
            "source": self.source,
            "voxel_mm": self.voxel_mm,
            "segmenter": seg.model_dump(mode="json"),
            "segmenter_batch_size": self.config.segmenter_training.batch_size,
            "decoder_base_filters": self.config.attack.decoder_base_filters,
            "decoder_batch_size": self.config.attack.train.batch_size,
            "notes": self.notes,
        }


def _fold_sizes(config: StudyConfig, n_subjects: int) -> tuple[int, int]:
    private = n_subjects // config.folds
    return private, n_subjects - private


def find_sample_config(name: str) -> Path | None:
    """``sample_configs/<name>.yaml`` of the repository checkout (or packaged copy)."""
    here = Path(__file__).resolve()
    for base in (here.parents[3] / "sample_configs", here.parents[2] / "sample_configs"):
        path = base / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def grid_from_study(study_dir: Path) -> Grid | None:
    """The exact grid of a study folder (``config.yaml`` + ``cohort.json``), or ``None``."""
    from napari_invert._io import read_json
    from napari_invert.config import load_config
    from napari_invert.errors import NapariInvertError
    from napari_invert.study.layout import StudyFolder

    folder = StudyFolder(Path(study_dir))
    if not (folder.config_path.is_file() and folder.cohort_path.is_file()):
        return None
    try:
        config = load_config(folder.config_path)
        cohort = read_json(folder.cohort_path)
        shape = tuple(int(s) for s in cohort["shape"])
        n_classes = int(cohort["n_classes"])
        n_subjects = len(cohort["subject_ids"])
    except (NapariInvertError, KeyError, TypeError, ValueError):
        return None
    private, attack = _fold_sizes(config, n_subjects)
    voxel = config.preprocess.voxel_mm if config.cohort.kind != "demo" else config.cohort.demo_voxel_mm
    return Grid(
        config.name,
        config,
        shape,  # type: ignore[arg-type]
        n_classes,
        private,
        attack,
        f"study folder {folder.root} (cohort.json)",
        voxel_mm=voxel,
    )


def quick_cpu_grid(n_subjects: int = 2) -> Grid | None:
    """``sample_configs/quick_cpu.yaml``: LPBA40 at 3 mm, prepared on ``n_subjects``."""
    from napari_invert.config import load_config
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.prepare import prepare_cohort
    from napari_invert.errors import NapariInvertError

    path = find_sample_config("quick_cpu")
    if path is None:
        return None
    config = load_config(path)
    total = config.cohort.n_subjects or 40
    private, attack = _fold_sizes(config, total)
    variant = config.preprocess.variants[0]
    try:
        cohort = Cohort.from_path(config.cohort.path, kind=config.cohort.kind)
        total = config.cohort.n_subjects or len(cohort.subjects)
        private, attack = _fold_sizes(config, total)
        sub = Cohort(
            cohort.name,
            cohort.subjects[:n_subjects],
            cohort.root,
            kind=cohort.kind,
            label_names=cohort.label_names,
        )
        prepared = prepare_cohort(
            sub, config.preprocess, config.multiple_of, variant, config.cohort.label_mode, progress=False
        )
    except (NapariInvertError, OSError) as exc:
        return Grid(
            "quick_cpu",
            config,
            FALLBACK_QUICK_SHAPE,
            FALLBACK_QUICK_CLASSES,
            private,
            attack,
            "fallback shape (LPBA40 not readable here)",
            [f"could not prepare LPBA40: {exc}"],
            voxel_mm=config.preprocess.voxel_mm,
        )
    n_classes = prepared.label_table.n_classes if prepared.label_table is not None else FALLBACK_QUICK_CLASSES
    return Grid(
        "quick_cpu",
        config,
        prepared.shape,
        n_classes,
        private,
        attack,
        f"prepare_cohort on LPBA40 {', '.join(s.subject_id for s in sub.subjects)} "
        f"({config.preprocess.voxel_mm} mm, multiple of {config.multiple_of})",
        samples=[(s.image, s.mask) for s in prepared.subjects],
        voxel_mm=config.preprocess.voxel_mm,
    )


def demo_grid(n_subjects: int = 2) -> Grid:
    """The ``napari-invert demo`` config: demo cohort of ``n_subjects``, prepared."""
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.demo import make_demo_cohort
    from napari_invert.data.prepare import prepare_cohort
    from napari_invert.study.presets import demo_config

    config = demo_config()
    total = config.cohort.n_subjects or 40
    private, attack = _fold_sizes(config, total)
    with tempfile.TemporaryDirectory(prefix="napari_invert_bench_demo_") as tmp:
        root = make_demo_cohort(
            Path(tmp) / "demo",
            n_subjects=n_subjects,
            seed=config.cohort.seed,
            voxel_mm=config.cohort.demo_voxel_mm,
            progress=False,
        )
        cohort = Cohort.from_path(root, kind="folder")
        variant = config.preprocess.variants[0]
        prepared = prepare_cohort(
            cohort, config.preprocess, config.multiple_of, variant, config.cohort.label_mode, progress=False
        )
    assert prepared.label_table is not None
    return Grid(
        "demo",
        config,
        prepared.shape,
        prepared.label_table.n_classes,
        private,
        attack,
        f"prepare_cohort on {n_subjects} demo subjects ({config.cohort.demo_voxel_mm} mm, "
        f"multiple of {config.multiple_of})",
        samples=[(s.image, s.mask) for s in prepared.subjects],
        voxel_mm=config.cohort.demo_voxel_mm,
    )


def tiny_grid() -> Grid:
    """A 16^3 grid with a 2-level, 4-filter network and one tap per architecture (tests)."""
    from napari_invert.config import parse_config

    config = parse_config(
        {
            "name": "tiny",
            "cohort": {"kind": "demo"},
            "segmenter": {"base_filters": 4, "levels": 2, "convs_per_level": 1},
            "segmenter_training": {"steps": 2, "batch_size": 1},
            "attack": {
                "taps": {"unet": ["bottleneck+skips"], "segnet": ["bottleneck+indices"]},
                "decoder_base_filters": 4,
                "train": {"steps": 2, "batch_size": 1, "augment": False},
            },
        },
        source="napari_invert.bench tiny grid",
    )
    return Grid("tiny", config, (16, 16, 16), 3, 2, 2, "fixed test grid", voxel_mm=3.0)
