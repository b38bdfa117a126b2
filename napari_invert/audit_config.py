"""The audit configuration: the user's own segmenter (``model:``) and cohort.

An audit config is a YAML file::

    name: my_unet
    model:                     # one of the model sources below
      kind: monai
      network: UNet
      args: {spatial_dims: 3, in_channels: 1, out_channels: 56,
             channels: [8, 16, 32, 64], strides: [2, 2, 2]}
      weights: unet_lpba40.pt  # torch.save(model.state_dict(), ...) or .safetensors
    cohort: {kind: lpba40, path: $NAPARI_INVERT_DATA/lpba40}
    preprocess: {voxel_mm: 4}  # as the model was trained (see PreprocessConfig)
    subjects:
      trained_on: [S01, S02]   # a list, a text file (one ID a line) or "unknown"
      attack: rest             # the attacker's own subjects; "rest" = not trained_on, not holdout
    attack: {taps: [bottleneck+skips, bottleneck]}

``model.kind``: ``monai`` (a class of :mod:`monai.networks.nets` + arguments + weights),
``bundle`` (a MONAI bundle folder), ``torchscript`` (a ``.pt``/``.ts`` TorchScript file),
``nnunet`` (an nnU-Net v2 trained-model folder) or ``entry_point``
(``package.module:function`` returning an ``nn.Module``: this imports and runs the user's
own code, by design). Relative paths are resolved against the config file's folder;
``$NAPARI_INVERT_DATA``, other environment variables and ``~`` are expanded.

Taps (``attack.taps``): each entry is a ``+``-joined list of *roles* (``bottleneck``,
``skips``, ``level0``, ``level1``, ... or their aliases ``skip0``, ...) or *layer names*
(``napari-invert taps CONFIG`` lists both). An entry may also be a mapping
``{name: short_name, layers: [...]}``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from napari_invert.config import (
    CohortConfig,
    EvaluationConfig,
    PreprocessConfig,
    StudyConfig,
    TrainConfig,
    _format_validation_error,
    expand_config_path,
    read_config_yaml,
)
from napari_invert.errors import ConfigError

Size3 = tuple[int, int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# -- model sources ---------------------------------------------------------------------------


class _SourceBase(_Strict):
    """Settings shared by every model source.

    ``input_size``: ``(X, Y, Z)`` of the dummy input used to discover taps (default:
    ``patch_size``, else 64³). ``in_channels``: input channels when the source cannot tell.
    ``multiple_of``: spatial sizes must be divisible by it (default: the coarsest
    downsampling factor found by the dummy pass). ``patch_size``: the model was trained on
    patches of this size; segmentation then runs by sliding window
    (:func:`monai.inferers.sliding_window_inference`, ``sw_overlap``), while taps are read
    on the whole padded volume (the encoders are fully convolutional).
    """

    input_size: Size3 | None = None
    in_channels: int | None = Field(default=None, ge=1)
    multiple_of: int | None = Field(default=None, ge=1)
    patch_size: Size3 | None = None
    sw_overlap: float = Field(default=0.25, ge=0, lt=1)


class MonaiSourceConfig(_SourceBase):
    """A network class of :mod:`monai.networks.nets` built with ``args``, plus its weights
    (state dict ``.pt``/``.pth`` read with ``weights_only=True``, or ``.safetensors``)."""

    kind: Literal["monai"]
    network: str = Field(description="class name in monai.networks.nets, e.g. UNet")
    args: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = None

    @field_validator("network")
    @classmethod
    def _bare_name(cls, v: str) -> str:
        v = v.removeprefix("monai.networks.nets.")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"'{v}' is not a class name of monai.networks.nets")
        return v


class BundleSourceConfig(_SourceBase):
    """A MONAI bundle folder: ``configs/inference.{json,yaml}`` (``network_key``, default
    ``network_def``) and ``models/model.pt`` (or ``weights``)."""

    kind: Literal["bundle"]
    path: Path
    config_file: str | None = Field(default=None, description="default: configs/inference.json|yaml")
    network_key: str = "network_def"
    weights: Path | None = None


class TorchScriptSourceConfig(_SourceBase):
    """A TorchScript file (``torch.jit.save``), loaded on the CPU."""

    kind: Literal["torchscript"]
    path: Path


class NnUNetSourceConfig(_SourceBase):
    """An nnU-Net v2 trained-model folder (``plans.json``, ``dataset.json``,
    ``fold_<k>/<checkpoint>``), rebuilt with ``dynamic-network-architectures``.
    ``weights``: a state dict exported from the checkpoint (when the checkpoint itself
    cannot be read with ``weights_only=True``)."""

    kind: Literal["nnunet"]
    path: Path
    configuration: str = "3d_fullres"
    fold: int | Literal["all"] = 0
    checkpoint: str = "checkpoint_final.pth"
    weights: Path | None = None


class EntryPointSourceConfig(_SourceBase):
    """``package.module:function`` called with ``args``; must return an ``nn.Module``.
    Optional ``weights`` are loaded into it (weights only)."""

    kind: Literal["entry_point"]
    entry_point: str
    args: dict[str, Any] = Field(default_factory=dict)
    weights: Path | None = None

    @field_validator("entry_point")
    @classmethod
    def _form(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", v):
            raise ValueError("expected 'package.module:function'")
        return v


ModelSourceConfig = Annotated[
    MonaiSourceConfig
    | BundleSourceConfig
    | TorchScriptSourceConfig
    | NnUNetSourceConfig
    | EntryPointSourceConfig,
    Field(discriminator="kind"),
]

_PATH_KEYS = ("weights", "path")


# -- the audit -------------------------------------------------------------------------------

SubjectList = list[str] | str


class AuditSubjects(_Strict):
    """Who is who. Each field: a list of subject IDs, a text file (one ID a line, ``#``
    comments) or a keyword.

    ``trained_on``: the subjects that trained the model, or ``unknown`` (then only the
    feature-inversion threat is reported). ``attack``: the attacker's own subjects, or
    ``rest`` = every subject neither in ``trained_on`` nor in ``holdout``; it may never
    overlap ``trained_on``. ``holdout``: non-members (neither trained on nor attacker's),
    reconstructed and scored like the members.
    """

    trained_on: SubjectList = "unknown"
    attack: SubjectList = "rest"
    holdout: SubjectList = Field(default_factory=list)


class AuditAttackConfig(_Strict):
    """The inversion attack on the user's model (see :mod:`napari_invert.attack`)."""

    taps: list[str | dict[str, Any]] = Field(default_factory=lambda: ["bottleneck+skips", "bottleneck"])
    decoder_base_filters: int = Field(default=16, ge=1)
    loss: Literal["mse", "l1", "mse+ssim"] = "mse"
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(augment=False))
    reconstruct_attack_subjects: bool = False


class AuditControls(_Strict):
    """``untrained_victim``: attack the same architecture at its initialisation as well
    (written as architecture ``user@untrained`` beside ``user``)."""

    untrained_victim: bool = True
    seed: int = 0


ThresholdAttack = Literal["loss_threshold", "dice_threshold", "confidence_threshold"]


class AuditMembership(_Strict):
    """Membership inference in an audit (threat model "training-data leakage"), run when
    ``subjects.trained_on`` is known and ``subjects.holdout`` is not empty.

    ``attacks``: the threshold attacks (the user's model's own fit to each candidate).
    ``lira: true`` adds the likelihood-ratio attacks (``lira_offline``, ``lira_global``):
    ``n_shadows`` shadow copies of the user's architecture (rebuilt from the model source:
    ``monai``, ``bundle``, ``nnunet``, ``entry_point``; not possible for ``torchscript``,
    which then keeps the threshold attacks and says so) are trained with ``shadow_train``
    (the recipe the user's model was trained with, as far as it is known: a white-box
    attacker knows it) on random halves of the attacker's own subjects, and compared on
    ``lira_signal``. ``fpr``, ``bootstrap``, ``permutations``, ``seed``: as in a study's
    ``membership:`` block.
    """

    enabled: bool = True
    attacks: list[ThresholdAttack] = Field(
        default_factory=lambda: ["loss_threshold", "dice_threshold", "confidence_threshold"], min_length=1
    )
    lira: bool = False
    n_shadows: int = Field(default=4, ge=2)
    lira_signal: Literal["loss", "dice", "confidence"] = "loss"
    shadow_train: TrainConfig = Field(default_factory=TrainConfig)
    fpr: float = Field(default=0.05, gt=0, lt=1)
    bootstrap: int = Field(default=2000, ge=100)
    permutations: int = Field(default=2000, ge=100)
    seed: int = 0


class AuditConfig(_Strict):
    """An audit of the user's own segmenter on the user's cohort."""

    name: str = "audit"
    model: ModelSourceConfig
    cohort: CohortConfig
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    subjects: AuditSubjects = Field(default_factory=AuditSubjects)
    attack: AuditAttackConfig = Field(default_factory=AuditAttackConfig)
    controls: AuditControls = Field(default_factory=AuditControls)
    membership: AuditMembership = Field(default_factory=AuditMembership)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_variant(self) -> AuditConfig:
        if len(self.preprocess.variants) != 1:
            raise ValueError("preprocess.variants: an audit uses exactly one variant")
        return self

    @property
    def variant(self) -> str:
        return self.preprocess.variants[0]

    def study_config(self) -> StudyConfig:
        """The :class:`StudyConfig` written as the audit folder's ``config.yaml`` (so
        ``napari-invert evaluate``, the report and the viewer read it unchanged; the
        audit's own settings are in ``audit.yaml`` beside it)."""
        return StudyConfig(
            name=self.name,
            cohort=self.cohort,
            preprocess=self.preprocess,
            folds=2,
            attack={"taps": {}, "train": self.attack.train, "loss": self.attack.loss},
            evaluation=self.evaluation,
            device=self.device,
            num_threads=self.num_threads,
        )


# -- loading ---------------------------------------------------------------------------------


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    data = dict(data)
    model = data.get("model")
    if isinstance(model, dict):
        model = dict(model)
        for key in _PATH_KEYS:
            if isinstance(model.get(key), (str, Path)) and str(model[key]).lower() != "none":
                model[key] = expand_config_path(model[key], base)
        data["model"] = model
    cohort = data.get("cohort")
    if isinstance(cohort, dict) and cohort.get("path"):
        data["cohort"] = {**cohort, "path": expand_config_path(cohort["path"], base)}
    subjects = data.get("subjects")
    if isinstance(subjects, dict):
        subjects = dict(subjects)
        for key in ("trained_on", "attack", "holdout"):
            v = subjects.get(key)
            if isinstance(v, str) and v not in ("unknown", "rest"):
                subjects[key] = str(expand_config_path(v, base))
        data["subjects"] = subjects
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_config_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_audit_config(
    data: dict[str, Any], source: str = "<config>", base: Path | None = None
) -> AuditConfig:
    """Validate a dict as an :class:`AuditConfig`; relative paths resolve against ``base``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    data = _resolve_paths(data, base or Path.cwd())
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_audit_config(path: str | Path) -> AuditConfig:
    """Read and validate an audit YAML file (errors name the file and the key)."""
    path = Path(path)
    return parse_audit_config(_read_yaml(path), source=str(path), base=path.parent.resolve())


class _ModelOnly(_Strict):
    model: ModelSourceConfig


def parse_model_config(
    data: dict[str, Any], source: str = "<config>", base: Path | None = None
) -> (
    MonaiSourceConfig
    | BundleSourceConfig
    | TorchScriptSourceConfig
    | NnUNetSourceConfig
    | EntryPointSourceConfig
):
    """Validate a ``model:`` block: ``data`` is either ``{"model": {...}, ...}`` (an audit
    config; other keys are ignored here) or the block itself (``{"kind": ...}``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    block = data if "kind" in data else data.get("model")
    if not isinstance(block, dict):
        raise ConfigError(f"{source}: model: missing (expected a 'model:' block with a 'kind')")
    wrapped = _resolve_paths({"model": block}, base or Path.cwd())
    try:
        return _ModelOnly.model_validate(wrapped).model
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_model_config(path: str | Path):
    """The ``model:`` block of a YAML file (an audit config or a model-only file)."""
    path = Path(path)
    return parse_model_config(_read_yaml(path), source=str(path), base=path.parent.resolve())


def read_subject_list(value: SubjectList, key: str) -> list[str] | str:
    """A subjects field -> list of IDs (a file is read: one ID a line, ``#`` comments),
    or the keyword itself (``unknown``/``rest``)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if value in ("unknown", "rest"):
        return value
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"subjects.{key}: '{value}' is neither a list, a keyword nor an existing file")
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.extend(p for p in re.split(r"[,\s]+", line) if p)
    return ids
