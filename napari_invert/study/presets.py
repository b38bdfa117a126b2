"""Built-in study configurations that must work without the repository checkout.

``napari-invert demo`` uses :func:`demo_config`; ``sample_configs/demo.yaml`` in the
repository is the same configuration written out (a test keeps them identical).
"""

from __future__ import annotations

from napari_invert.config import StudyConfig, parse_config

#: Sized for about 3 to 4 minutes on 2 CPU cores (measured: BENCHMARKS.md, "Demo"): an 8 mm
#: grid, the skull-stripped variant only (``napari-invert demo --full-head`` adds the paper's
#: second axis at twice the time), victims trained to a validation plateau or 300 steps,
#: decoders 60 steps, and membership inference by the threshold attacks only (the
#: likelihood-ratio attacks need shadow segmenters: see controls_cpu.yaml).
DEMO: dict = {
    "name": "demo",
    "cohort": {"kind": "demo", "n_subjects": 40, "seed": 0, "demo_voxel_mm": 8.0},
    "preprocess": {
        "voxel_mm": None,
        "normalisation": "percentile",
        "variants": ["skull_stripped"],
    },
    "folds": 4,
    "split_seed": 0,
    "holdout": "fold",  # 10 private / 10 held out / 20 attack: the members-vs-non-members control
    "controls": {"untrained_victim": True, "reid_baselines": True},
    "membership": {"n_shadows": 0, "attacks": ["loss_threshold", "dice_threshold"]},
    "segmenter": {
        "architectures": ["unet", "segnet"],
        "kernel_size": 3,
        "pool_size": 2,
        "base_filters": 8,
        "levels": 3,
        "convs_per_level": 1,
    },
    "segmenter_training": {
        "steps": 300,
        "batch_size": 2,
        "lr": 0.01,
        "checkpoint_every": 50,
        "segmentation_loss": "dice_focal",
    },
    "attack": {
        "taps": {"unet": ["bottleneck+skips", "bottleneck"], "segnet": ["bottleneck+indices", "bottleneck"]},
        "decoder_base_filters": 8,
        "loss": "mse",
        "train": {"steps": 60, "batch_size": 2, "lr": 0.01, "augment": False, "checkpoint_every": 60},
    },
    "evaluation": {"metrics": ["correlation", "ssim", "ssim_global", "dice"], "deformation": {"mode": "off"}},
    "device": "auto",
    "num_threads": 1,
    "jobs": 2,
}


def demo_config(n_subjects: int | None = None, full_head: bool = False) -> StudyConfig:
    """The demo study's configuration; ``n_subjects`` overrides the default 40 and
    ``full_head`` adds the full-head variant (the paper's second axis; twice the work)."""
    import copy

    data = copy.deepcopy(DEMO)
    if n_subjects is not None:
        data["cohort"]["n_subjects"] = n_subjects
    if full_head:
        data["preprocess"]["variants"] = ["skull_stripped", "full_head"]
    return parse_config(data, source="napari_invert.study.presets.DEMO")
