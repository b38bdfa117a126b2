"""The one validated configuration schema, shared by the CLI, notebooks and widgets.

A study is described by a YAML file that maps onto :class:`StudyConfig`. Unknown keys
and wrong values are rejected with a :class:`~napari_invert.errors.ConfigError` whose
message names the file, the dotted key and the problem.

Units: voxel sizes in millimetres, learning rates per step, ``steps`` counts optimiser
steps (one step = one mini-batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from napari_invert.errors import ConfigError

Architecture = Literal["unet", "segnet"]
Variant = Literal["skull_stripped", "full_head"]
TapName = Literal["bottleneck", "bottleneck+skips", "bottleneck+indices"]
PositiveFloat = Annotated[float, Field(gt=0)]

#: Taps that make sense for each architecture (what the attacker can read).
VALID_TAPS: dict[str, tuple[str, ...]] = {
    "unet": ("bottleneck", "bottleneck+skips"),
    "segnet": ("bottleneck", "bottleneck+indices"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CohortConfig(_Strict):
    """Where the subjects come from.

    ``kind``: ``lpba40`` and ``ixi`` are the built-in layouts of ``../shared/data``;
    ``folder`` is the generic ``images/ labels/ masks/`` layout; ``manifest`` a CSV or
    YAML list of files; ``demo`` the embedded synthetic cohort (written to ``path``, or to
    ``<study>/demo_cohort`` when ``path`` is empty).
    """

    kind: Literal["lpba40", "ixi", "folder", "manifest", "demo"] = "folder"
    path: Path | None = None
    n_subjects: int | None = Field(default=None, ge=2, description="use the first N subjects")
    seed: int = Field(default=0, description="demo cohort seed")
    demo_voxel_mm: PositiveFloat = Field(default=3.0, description="demo cohort voxel size, mm")
    label_mode: Literal["restrict_to_mask", "drop_unseen", "keep"] = Field(
        default="restrict_to_mask",
        description="labels outside the brain mask: set to background, drop, or keep",
    )

    @model_validator(mode="after")
    def _path_needed(self) -> CohortConfig:
        if self.kind != "demo" and self.path is None:
            raise ValueError(f"cohort.path is required for cohort kind '{self.kind}'")
        return self


class PreprocessConfig(_Strict):
    """How images are brought onto the network's grid.

    ``voxel_mm``: target isotropic voxel size in mm (``None`` keeps the native grid).
    Volumes are reoriented to RAS, resampled, then cropped/padded to a multiple of
    ``2**levels`` (taken from the segmenter config) so every pooling level divides evenly.
    """

    voxel_mm: PositiveFloat | None = None
    crop_to_mask: bool = Field(default=True, description="crop to the union of brain masks")
    normalisation: Literal["percentile", "zscore", "nyul", "none"] = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    n4: bool = False
    variants: list[Variant] = Field(default_factory=lambda: ["skull_stripped"], min_length=1)
    cache: bool = True

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0 <= lo < hi <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        return v


class SegmenterConfig(_Strict):
    """The victim networks, as in the paper: kernel x, pooling y, z base filters, n levels.

    Filters double at each level (``base_filters * 2**level``), capped at ``max_filters``.
    """

    architectures: list[Architecture] = Field(default_factory=lambda: ["unet", "segnet"], min_length=1)
    kernel_size: int = Field(default=3, ge=1)
    pool_size: int = Field(default=2, ge=2)
    base_filters: int = Field(default=16, ge=1)
    max_filters: int = Field(default=256, ge=1)
    levels: int = Field(default=4, ge=1, le=6)
    convs_per_level: int = Field(default=2, ge=1)
    norm: Literal["batch", "instance", "none"] = "instance"
    dropout: float = Field(default=0.0, ge=0, lt=1)


class TrainConfig(_Strict):
    """Optimisation settings (Adam). ``steps``: optimiser steps; ``batch_size``: volumes."""

    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=2, ge=1)
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(default=0.0, ge=0)
    augment: bool = Field(default=True, description="random flips and intensity jitter")
    checkpoint_every: int = Field(default=50, ge=1, description="steps between resumable checkpoints")
    seed: int = 0


class AttackConfig(_Strict):
    """The inversion attack: which taps the attacker reads and how its decoder is trained."""

    taps: dict[Architecture, list[TapName]] = Field(
        default_factory=lambda: {
            "unet": ["bottleneck+skips", "bottleneck"],
            "segnet": ["bottleneck+indices", "bottleneck"],
        }
    )
    decoder_base_filters: int = Field(default=16, ge=1)
    loss: Literal["mse", "l1", "mse+ssim"] = "mse"
    train: TrainConfig = Field(default_factory=TrainConfig)
    reconstruct_attack_subjects: bool = True

    @model_validator(mode="after")
    def _taps_fit_architecture(self) -> AttackConfig:
        for arch, taps in self.taps.items():
            for tap in taps:
                if tap not in VALID_TAPS[arch]:
                    raise ValueError(
                        f"tap '{tap}' is not available for {arch} (choose from {VALID_TAPS[arch]})"
                    )
        return self


class DeformationConfig(_Strict):
    """ANTs registration of reconstruction to original (affine MI, then SyN CC)."""

    mode: Literal["off", "sample", "full"] = "sample"
    preset: Literal["fast", "paper"] = "fast"
    sample_size: int = Field(default=5, ge=1, description="candidates per reconstruction in 'sample'")
    workers: int = Field(default=2, ge=1)
    taps: Literal["first", "all"] = Field(
        default="first",
        description="register only the first tap listed per architecture (the paper's Table 3) or all",
    )
    backend: Literal["ants", "fireants"] = Field(
        default="ants",
        description="registration engine: ants (CPU) or fireants (PyTorch; CUDA when present, else CPU)",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare ``off`` as the boolean False.
        return "off" if v is False else v


class EvaluationConfig(_Strict):
    """What ``napari-invert evaluate`` computes."""

    metrics: list[Literal["correlation", "ssim", "ssim_global", "deformation", "dice"]] = Field(
        default_factory=lambda: ["correlation", "ssim", "ssim_global", "dice"]
    )
    identification_metric: Literal["ssim", "correlation", "ssim_global"] = "ssim"
    space: Literal["model", "native"] = "model"
    deformation: DeformationConfig = Field(default_factory=DeformationConfig)


class ExecutionConfig(_Strict):
    """Where the study's independent units (one victim and its attacks each) run.

    ``backend``: ``local`` (``jobs`` processes on this machine) or ``ray`` (Ray tasks on
    the cluster at ``address``: ``auto``, ``HOST:PORT``, or empty for a local Ray
    instance; ``pip install 'napari-invert[cluster]'``). ``cpus_per_task``: cores per unit
    (also its torch threads); ``gpus_per_task``: GPUs per unit, fractions share one GPU
    (``0.25``: four small 3D trainings per device). Runtime-only: changing it never
    invalidates a study folder.
    """

    backend: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, description="Ray cluster: auto | HOST:PORT")
    cpus_per_task: PositiveFloat = 1.0
    gpus_per_task: float = Field(default=0.0, ge=0)

    @field_validator("gpus_per_task")
    @classmethod
    def _gpu_share(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("gpus_per_task must be a fraction of one GPU (0..1) or a whole number")
        return v


class StudyConfig(_Strict):
    """A complete k-fold inversion study (the paper's protocol and its variations)."""

    name: str = "study"
    cohort: CohortConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    folds: int = Field(default=4, ge=2)
    split_seed: int = 0
    segmenter: SegmenterConfig = Field(default_factory=SegmenterConfig)
    segmenter_training: TrainConfig = Field(default_factory=TrainConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads")
    jobs: int = Field(default=1, ge=1, description="folds run in this many parallel processes")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @property
    def multiple_of(self) -> int:
        """Spatial sizes must be divisible by this (``pool_size ** levels``)."""
        return self.segmenter.pool_size**self.segmenter.levels


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> StudyConfig:
    """Validate a plain dict as a :class:`StudyConfig`; errors name ``source`` and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a YAML study config.

    Relative ``cohort.path`` values are resolved against the config file's folder, and
    ``$NAPARI_INVERT_DATA`` / ``~`` are expanded, so sample configs work from anywhere.
    ``overrides`` is a nested dict merged over the file's content before validation.
    """
    import os

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if overrides:
        data = _deep_merge(data, overrides)
    cohort = data.get("cohort") if isinstance(data, dict) else None
    if isinstance(cohort, dict) and cohort.get("path"):
        raw = os.path.expanduser(os.path.expandvars(str(cohort["path"])))
        if "$" in raw:
            raw = raw.replace("${NAPARI_INVERT_DATA}", default_data_root().as_posix())
            raw = raw.replace("$NAPARI_INVERT_DATA", default_data_root().as_posix())
        p = Path(raw)
        cohort["path"] = p if p.is_absolute() else (path.parent / p).resolve()
    return parse_config(data, source=str(path))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def default_data_root() -> Path:
    """The shared data folder.

    ``$NAPARI_INVERT_DATA`` when set; otherwise ``../shared/data`` beside the repository
    checkout this package was imported from, or beside the current working directory.
    The returned folder may not exist (callers report that clearly).
    """
    import os

    env = os.environ.get("NAPARI_INVERT_DATA")
    if env:
        return Path(env).expanduser().resolve()
    candidates = [
        Path(__file__).resolve().parent.parent.parent / "shared" / "data",
        Path.cwd().resolve().parent / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def dump_config(config: StudyConfig) -> str:
    """Return the fully resolved config as YAML (paths as strings)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
