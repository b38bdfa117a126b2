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
from napari_invert.tap_names import VALID_TAPS as VALID_TAPS  # re-exported (plugin, older code)
from napari_invert.tap_names import parse_tap

Architecture = Literal["unet", "segnet"]
Variant = Literal["skull_stripped", "full_head"]
#: A tap name (see :mod:`napari_invert.tap_names`): ``bottleneck``, ``bottleneck+skips``,
#: ``skip0``, ``bottleneck+skip3``, ``bottleneck+indices0`` ...
TapName = str
PositiveFloat = Annotated[float, Field(gt=0)]


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
    crop_to_mask: bool = Field(
        default=True,
        description=(
            "crop to the union bounding box of the brain masks (heads for full-head cohorts). The "
            "window is the victim's input grid, a public property of a deployed model that anyone "
            "running it (a white-box attacker included) must know; private subjects set only its "
            "six bounds (plus a margin), never any intensity. false = the whole resampled grid, "
            "independent of every subject"
        ),
    )
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


class ArchitectureOverrides(_Strict):
    """Width settings of one architecture that differ from the shared ones (``None``: shared).

    Only settings that leave the grid untouched (``levels``, ``pool_size`` and
    ``kernel_size`` are shared by both victims, so one preprocessing serves both).
    """

    base_filters: int | None = Field(default=None, ge=1)
    max_filters: int | None = Field(default=None, ge=1)
    convs_per_level: int | None = Field(default=None, ge=1)
    norm: Literal["batch", "instance", "none"] | None = None
    dropout: float | None = Field(default=None, ge=0, lt=1)


class SegmenterConfig(_Strict):
    """The victim networks, as in the paper: kernel x, pooling y, z base filters, n levels.

    Filters double at each level (``base_filters * 2**level``), capped at ``max_filters``.
    ``per_architecture`` changes width settings for one architecture (e.g. ``segnet:
    {base_filters: 16}``); every network applies it to itself
    (:meth:`for_architecture`), so its saved description holds the settings it was
    built with.
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
    per_architecture: dict[Architecture, ArchitectureOverrides] = Field(
        default_factory=dict,
        description="width settings of one architecture that differ from the shared ones",
    )

    def for_architecture(self, arch: str) -> SegmenterConfig:
        """These settings with ``per_architecture[arch]`` applied and ``per_architecture``
        emptied: what a network of ``arch`` is built from."""
        overrides = self.per_architecture.get(arch)  # type: ignore[call-overload]
        changes: dict[str, Any] = {"per_architecture": {}}
        if overrides is not None:
            changes.update(overrides.model_dump(exclude_none=True))
        return type(self).model_validate({**self.model_dump(), **changes})


class TrainConfig(_Strict):
    """Optimisation settings (Adam). ``steps``: optimiser steps; ``batch_size``: volumes."""

    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=2, ge=1)
    lr: PositiveFloat = 1e-3
    weight_decay: float = Field(default=0.0, ge=0)
    augment: bool = Field(
        default=True,
        description="random intensity jitter, plus random flips along flip_axes and a random "
        "affine (rotate_deg, scale_fraction, shift_voxels) where set",
    )
    checkpoint_every: int = Field(default=50, ge=1, description="steps between resumable checkpoints")
    seed: int = 0
    # -- training to a validation plateau (napari_invert.models.validation) --
    validation_fraction: float = Field(
        default=0.2,
        ge=0,
        le=0.5,
        description="share of the training subjects held out to judge convergence (0: none, "
        "train exactly `steps`); with too few subjects the training subjects are scored",
    )
    validate_every: int = Field(default=25, ge=1, description="steps between validation scores")
    patience: int | None = Field(
        default=150, ge=1, description="stop after this many steps without a min_delta improvement"
    )
    min_delta: float = Field(
        default=0.005,
        ge=0,
        description="smallest improvement that resets patience: absolute for a victim's Dice, "
        "relative (fraction of the best so far) for a decoder's MSE",
    )
    lr_schedule: Literal["constant", "cosine", "plateau"] = Field(
        default="constant", description="after warm-up: constant, cosine to `steps`, or halve on plateau"
    )
    warmup_steps: int = Field(default=0, ge=0, description="linear learning-rate warm-up steps")
    flip_axes: list[Literal[0, 1, 2]] = Field(
        default_factory=list,
        description="axes randomly flipped when augment is on (image and labels together); "
        "empty: none (left/right-specific labels would be swapped by an x flip)",
    )
    rotate_deg: float = Field(
        default=0.0,
        ge=0,
        le=45,
        description="augment: largest random rotation about each axis, degrees (0: none)",
    )
    scale_fraction: float = Field(
        default=0.0, ge=0, lt=0.5, description="augment: largest random per-axis scaling, e.g. 0.1 = +-10 %"
    )
    shift_voxels: float = Field(
        default=0.0, ge=0, description="augment: largest random shift per axis, in voxels of the grid"
    )
    segmentation_loss: Literal["dice_ce", "dice_focal"] = Field(
        default="dice_ce", description="victims only: Dice + cross-entropy or Dice + focal"
    )
    dice_include_background: bool = Field(
        default=True, description="victims only: background in the Dice term"
    )
    dice_squared_pred: bool = Field(default=False, description="victims only: squared predictions in Dice")
    min_validation_dice: float = Field(
        default=0.3, ge=0, le=1, description="victims only: below this validation Dice it 'does not segment'"
    )
    min_dice_gain: float = Field(
        default=0.05, ge=0, le=1, description="victims only: required Dice above the majority-label baseline"
    )


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
            if len(set(taps)) != len(taps):
                raise ValueError(f"taps of {arch} repeat: {taps}")
            for tap in taps:
                parse_tap(tap, arch)  # grammar and architecture; levels are checked by StudyConfig
        return self


class DeformationConfig(_Strict):
    """ANTs registration of reconstruction to original (affine MI, then SyN CC)."""

    mode: Literal["off", "sample", "full"] = Field(
        default="sample",
        description="'full': every pair, ranks among all N (the paper's protocol, chance 1/N); "
        "'sample': the true original + sample_size others, ranks among 1 + sample_size "
        "(chance 1/(1 + sample_size), not comparable with the paper's counts out of 40)",
    )
    preset: Literal["fast", "paper"] = Field(
        default="fast",
        description="'fast': SyN 40x20x0 iterations, i.e. NO SyN iteration at the finest "
        "(full-resolution) level: the field is optimised at half resolution and upsampled; "
        "'paper': antsRegistrationSyN.sh schedule, SyN 100x70x50x20 (minutes per pair at 1 mm)",
    )
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
    measure: Literal["nonlinear", "total"] = Field(
        default="nonlinear",
        description="what the number is: 'nonlinear', the mean norm of the non-linear field after "
        "the affine stage (the paper's); 'total', the mean displacement of the whole transform "
        "(affine + non-linear), which ranks candidates alike across backends (use it with fireants)",
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
    space: Literal["model", "native"] = Field(
        default="model",
        description="'native': also score each private reconstruction against its own original on the "
        "subject's native grid (correlation, global and windowed SSIM, and the prior as control; true "
        "pairs only), reported beside the model-grid scores",
    )
    deformation: DeformationConfig = Field(default_factory=DeformationConfig)


class _DefenceBase(_Strict):
    """Common fields of every defence (see :mod:`napari_invert.defences`).

    ``strengths``: one defended victim is trained and attacked per value (a point on the
    privacy-utility frontier). ``architectures``: which victims get this defence (default:
    every architecture of ``segmenter.architectures``).
    """

    architectures: list[Architecture] | None = None


class ExposeLessDefence(_DefenceBase):
    """Expose less: the victim is TRAINED without the skip connections (U-Net) or pooling
    indices (SegNet) of levels ``0..k-1``; strength ``k`` (1 = no level-0 skip)."""

    kind: Literal["expose_less"]
    strengths: list[Annotated[int, Field(ge=1, le=6)]] = Field(min_length=1)


class NoiseDefence(_DefenceBase):
    """Gaussian noise on every exposed float tensor at inference (and, with ``train``,
    during the victim's training); strength = sigma relative to that tensor's SD."""

    kind: Literal["noise"]
    strengths: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    train: bool = Field(default=True, description="also add the noise while training the victim")


class QuantiseDefence(_DefenceBase):
    """Quantise every exposed float tensor to ``k`` bits (``2**k`` levels between its min and
    max); strength ``k``. With ``train`` the victim is trained through the quantiser
    (straight-through gradient)."""

    kind: Literal["quantise"]
    strengths: list[Annotated[int, Field(ge=1, le=16)]] = Field(min_length=1)
    train: bool = True


class DecorrelationDefence(_DefenceBase):
    """NoPeek: distance-correlation penalty between the input and the exposed features during
    training; strength = the penalty's weight. ``positions``: voxel positions sampled per
    volume and tensor (dCor is computed within each volume, see
    :mod:`napari_invert.defences.dcor`)."""

    kind: Literal["nopeek"]
    strengths: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    positions: int = Field(default=256, ge=8, le=4096)


class AdversarialDefence(_DefenceBase):
    """Adversarial training: the victim is trained against an inversion decoder (gradient
    reversal: the adversary minimises, the victim maximises its reconstruction error);
    strength = weight of the adversary's loss in the victim's objective."""

    kind: Literal["adversarial"]
    strengths: list[Annotated[float, Field(ge=0)]] = Field(min_length=1)
    adversary_base_filters: int = Field(default=8, ge=1)


class DPSGDDefence(_DefenceBase):
    """DP-SGD (Opacus): per-sample gradient clipping at ``max_grad_norm`` and Gaussian noise;
    strength = the noise multiplier. Epsilon at ``delta`` comes from Opacus' RDP accountant.
    Needs ``pip install 'napari-invert[dp]'`` and ``segmenter.norm`` instance or none."""

    kind: Literal["dp_sgd"]
    strengths: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)
    max_grad_norm: PositiveFloat = 1.0
    delta: float = Field(default=1e-5, gt=0, lt=1)


#: One entry of the study's ``defences:`` list, told apart by ``kind``.
DefenceConfig = Annotated[
    ExposeLessDefence
    | NoiseDefence
    | QuantiseDefence
    | DecorrelationDefence
    | AdversarialDefence
    | DPSGDDefence,
    Field(discriminator="kind"),
]


MembershipAttack = Literal[
    "loss_threshold", "dice_threshold", "confidence_threshold", "lira_offline", "lira_global"
]


class MembershipConfig(_Strict):
    """Membership inference (threat model "training-data leakage"): was a scan with its
    labels one of the victim's training subjects?

    ``attacks``: ``*_threshold`` score each candidate by the victim's loss / foreground Dice
    / true-class confidence; ``lira_offline`` and ``lira_global`` compare that score with
    ``n_shadows`` shadow segmenters the attacker trains on random halves of its own
    subjects (likelihood-ratio attack, Carlini et al. 2022) using ``lira_signal``.
    ``fpr``: the false-positive rate at which TPR is reported (the report says when the
    number of non-members cannot support it). ``bootstrap`` / ``permutations``: resamples
    for the AUC interval and p-value. ``untrained_control``: also attack the victim's
    architecture at initialisation (expected AUC 0.5).
    """

    enabled: bool = True
    n_shadows: int = Field(default=4, ge=0, description="shadow segmenters for the likelihood-ratio attack")
    attacks: list[MembershipAttack] = Field(
        default_factory=lambda: ["loss_threshold", "dice_threshold", "lira_offline", "lira_global"],
        min_length=1,
    )
    lira_signal: Literal["loss", "dice", "confidence"] = "loss"
    fpr: float = Field(default=0.05, gt=0, lt=1, description="FPR at which TPR is reported")
    bootstrap: int = Field(default=2000, ge=100, description="bootstrap resamples for the AUC interval")
    permutations: int = Field(default=2000, ge=100, description="relabellings for the AUC p-value")
    seed: int = 0
    untrained_control: bool = True

    @model_validator(mode="after")
    def _shadows_for_lira(self) -> MembershipConfig:
        if any(a.startswith("lira") for a in self.attacks) and self.n_shadows < 2:
            raise ValueError("n_shadows must be >= 2 for the likelihood-ratio attacks (lira_*)")
        return self


class ControlsConfig(_Strict):
    """Controls every study computes (each switchable off), so each result can be read against them.

    ``untrained_victim``: the same architecture at its initialisation (seeded as the trained
    victim's start), attacked exactly like the trained one: what survives is feature inversion
    that needs no training. ``reid_baselines``: re-identification by the brain-mask shape alone
    (Dice of the thresholded reconstruction with each candidate's mask), by the attacker's mean
    image, and every score again inside one mask common to all candidates (so the outline alone
    cannot identify).
    """

    untrained_victim: bool = True
    reid_baselines: bool = True


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
    holdout: int | Literal["fold"] = Field(
        default="fold",
        description=(
            "held-out NON-members per fold: subjects neither the victim nor the attacker trains on, "
            "reconstructed and scored like the private members (the members-versus-non-members "
            "control). 'fold' = as many as a fold's private set (LPBA40: 10 private / 10 held out / "
            "20 attack; every subject is held out exactly once); 0 = off (the paper's 10 / 30)"
        ),
    )
    controls: ControlsConfig = Field(default_factory=ControlsConfig)
    membership: MembershipConfig = Field(
        default_factory=MembershipConfig,
        description="membership inference (training-data leakage); needs held-out non-members (holdout > 0)",
    )
    segmenter: SegmenterConfig = Field(default_factory=SegmenterConfig)
    segmenter_training: TrainConfig = Field(default_factory=TrainConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch CPU threads per process (the evaluation, one process, uses num_threads x jobs)",
    )
    jobs: int = Field(default=1, ge=1, description="folds run in this many parallel processes")
    defences: list[DefenceConfig] = Field(default_factory=list, description="defended victims to compare")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @property
    def multiple_of(self) -> int:
        """Spatial sizes must be divisible by this (``pool_size ** levels``)."""
        return self.segmenter.pool_size**self.segmenter.levels

    @model_validator(mode="after")
    def _no_cohort_fitted_normalisation(self) -> StudyConfig:
        if self.preprocess.normalisation == "nyul":
            raise ValueError(
                "preprocess.normalisation: 'nyul' learns its landmarks from every subject a study "
                "prepares, private ones included, which leaks their histograms to the attacker; use "
                "'percentile' or 'zscore' (per subject) in studies"
            )
        return self

    @field_validator("holdout")
    @classmethod
    def _holdout_non_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("holdout must be 'fold' or a number >= 0")
        return v

    @model_validator(mode="after")
    def _tap_levels_exist(self) -> StudyConfig:
        for arch, taps in self.attack.taps.items():
            for tap in taps:
                try:
                    parse_tap(tap, arch, self.segmenter.levels)
                except ValueError as exc:
                    raise ValueError(f"attack.taps.{arch}: {exc}") from None
        return self


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
    path = Path(path)
    data = read_config_yaml(path)
    if overrides:
        data = _deep_merge(data, overrides)
    cohort = data.get("cohort") if isinstance(data, dict) else None
    if isinstance(cohort, dict) and cohort.get("path"):
        cohort["path"] = expand_config_path(cohort["path"], path.parent)
    return parse_config(data, source=str(path))


def read_config_yaml(path: Path) -> Any:
    """The YAML document of a config file (``{}`` when empty); :class:`ConfigError` naming
    the file when it is missing or not valid YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def expand_config_path(value: str | Path, base: Path) -> Path:
    """A path written in a config file: ``~`` and environment variables expanded
    (``$NAPARI_INVERT_DATA``, when unset, is :func:`default_data_root`), relative paths
    resolved against ``base`` (the config file's folder)."""
    import os

    raw = os.path.expanduser(os.path.expandvars(str(value)))
    if "$" in raw:
        root = default_data_root().as_posix()
        raw = raw.replace("${NAPARI_INVERT_DATA}", root).replace("$NAPARI_INVERT_DATA", root)
    p = Path(raw)
    return p if p.is_absolute() else (base / p).resolve()


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
