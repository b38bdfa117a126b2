"""Built-in study configurations that must work without the repository checkout.

``napari-invert demo`` uses :func:`demo_config`; ``sample_configs/demo.yaml`` in the
repository is the same configuration written out (a test keeps them identical).
"""

from __future__ import annotations

from napari_invert.config import StudyConfig, parse_config

DEMO: dict = {
    "name": "demo",
    "cohort": {"kind": "demo", "n_subjects": 40, "seed": 0, "demo_voxel_mm": 6.0},
    "preprocess": {
        "voxel_mm": None,
        "normalisation": "percentile",
        "variants": ["skull_stripped", "full_head"],
    },
    "folds": 4,
    "split_seed": 0,
    "holdout": "fold",  # 10 private / 10 held out / 20 attack: the members-vs-non-members control
    "controls": {"untrained_victim": True, "reid_baselines": True},
    "membership": {"n_shadows": 2},
    "segmenter": {
        "architectures": ["unet", "segnet"],
        "kernel_size": 3,
        "pool_size": 2,
        "base_filters": 8,
        "levels": 3,
        "convs_per_level": 1,
    },
    "segmenter_training": {"steps": 60, "batch_size": 2, "lr": 0.003, "checkpoint_every": 30},
    "attack": {
        "taps": {"unet": ["bottleneck+skips", "bottleneck"], "segnet": ["bottleneck+indices", "bottleneck"]},
        "decoder_base_filters": 8,
        "loss": "mse",
        "train": {"steps": 60, "batch_size": 2, "lr": 0.003, "augment": False, "checkpoint_every": 30},
    },
    "evaluation": {"metrics": ["correlation", "ssim", "ssim_global", "dice"], "deformation": {"mode": "off"}},
    "device": "auto",
    "num_threads": 1,
    "jobs": 2,
}


def demo_config(n_subjects: int | None = None) -> StudyConfig:
    """The demo study's configuration; ``n_subjects`` overrides the default 40."""
    import copy

    data = copy.deepcopy(DEMO)
    if n_subjects is not None:
        data["cohort"]["n_subjects"] = n_subjects
    return parse_config(data, source="napari_invert.study.presets.DEMO")
