"""One inversion decoder against the user's own model, outside a full audit (the plugin's
Attack dock; threat model **feature inversion**).

The same steps as one attack of :class:`~napari_invert.audit.AuditRunner`, for one tap:
the cohort is preprocessed as the audit config says (``preprocess:``, ``cohort.label_mode``)
onto a grid divisible by the adapter's ``multiple_of`` and checked against the network
(:meth:`ModelAdapter.check_grid`); the model is tapped with the adapter's own tapper
(hooks, or graph values for TorchScript); the decoder is trained on the attacker's subjects
only (resumable, cancellable), saved (safetensors + JSON) and reconstructs the targets,
which are written as NIfTI beside it. Those last steps are the core's
:mod:`napari_invert.attack.job`, shared with the plugin's study-victim path.

Where things go (:func:`decoder_stem`): ``<model source folder>/<source stem>_napari_invert/
<tap slug>/decoder.{safetensors,json}``, ``decoder_gui_resume.*`` while training,
``curve.csv`` and ``recon/<subject>.nii.gz``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_invert.config import CohortConfig, PreprocessConfig, TrainConfig
from napari_invert.errors import ConfigError, DataError
from napari_invert.study.layout import tap_slug

if TYPE_CHECKING:  # torch is imported by the worker, never when the plugin loads
    from napari_invert.attack.job import DecoderRun, Target

THREAT_MODEL = "feature inversion"


@dataclass(frozen=True)
class OwnModelCohort:
    """The cohort an audit config names, preprocessed as the user's model was trained.

    ``from_audit_config``: cohort, preprocessing and variant of an
    :class:`~napari_invert.audit_config.AuditConfig`; ``from_folder``: a cohort folder
    with the default preprocessing (a model file chosen without a config).
    """

    cohort: CohortConfig
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    cache_dir: Path | None = None

    @classmethod
    def from_audit_config(cls, config: Any) -> OwnModelCohort:
        return cls(config.cohort, config.preprocess)

    @classmethod
    def from_folder(cls, path: str | Path) -> OwnModelCohort:
        return cls(CohortConfig(kind="folder", path=Path(path)), PreprocessConfig(cache=False))

    @property
    def variant(self) -> str:
        return self.preprocess.variants[0]

    def subject_ids(self) -> list[str]:
        """The cohort's subject IDs (layout only; nothing is preprocessed)."""
        return [s.subject_id for s in self._cohort().subjects]

    def _cohort(self):
        from napari_invert.data.cohort import Cohort

        c = self.cohort
        if c.kind == "demo" or c.path is None:
            raise ConfigError("cohort: the plugin needs a cohort on disk (cohort.path), not the demo kind")
        return Cohort.from_path(c.path, kind=c.kind, n_subjects=c.n_subjects)

    def prepare(self, adapter: Any, progress: bool = False):
        """:class:`~napari_invert.data.prepare.PreparedCohort` on a grid the network accepts
        (divisible by ``adapter.multiple_of``); ConfigError when channels or grid do not fit."""
        from napari_invert.data.prepare import prepare_cohort

        prepared = prepare_cohort(
            self._cohort(),
            self.preprocess,
            multiple_of=adapter.multiple_of,
            variant=self.variant,
            label_mode=self.cohort.label_mode,
            cache_dir=self.cache_dir,
            progress=progress,
        )
        adapter.check_grid(prepared.shape, channels=1)
        return prepared


def decoder_stem(source: str | Path, tap: str) -> Path:
    """Where the plugin's decoder for ``tap`` of the model at ``source`` is saved."""
    source = Path(source)
    return source.parent / f"{source.stem}_napari_invert" / tap_slug(tap) / "decoder"


def _targets(prepared: Any, ids: Sequence[str], what: str) -> list[Target]:
    """The prepared subjects ``ids`` (DataError naming the missing ones) as targets."""
    from napari_invert.attack.job import Target

    by_id = {s.subject_id: s for s in prepared.subjects}
    missing = [s for s in ids if s not in by_id]
    if missing:
        raise DataError(
            Path(str(getattr(prepared, "name", "cohort"))), f"{what} not in the cohort: {', '.join(missing)}"
        )
    return [Target(s, by_id[s].image, by_id[s].affine) for s in ids]


def train_own_decoder(
    adapter: Any,
    tap: str,
    data: OwnModelCohort,
    attack_ids: Sequence[str],
    target_ids: Sequence[str],
    stem: Path,
    train: TrainConfig,
    base_filters: int = 16,
    loss: str = "mse",
    device: str = "auto",
    trained_on: Sequence[str] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DecoderRun:
    """Train a decoder inverting ``tap`` of the user's model on ``attack_ids`` only, save it
    at ``stem`` and reconstruct ``target_ids``; a cancel returns ``cancelled=True`` (the
    training state is kept at :func:`napari_invert.attack.job.resume_stem` and continues on
    the next call).

    ``tap``: a role (``bottleneck+skips``) or layer name(s) (see ``napari-invert taps``);
    ``trained_on``: the subjects that trained the user's model; an attack set that
    overlaps them is refused (the attacker's data are its own).
    """
    from napari_invert.attack.job import train_decoder_for_tap
    from napari_invert.device import resolve_device

    overlap = sorted(set(attack_ids) & set(trained_on or ()))
    if overlap:
        raise ConfigError(
            f"attack set: {', '.join(overlap)} trained the model (trained_on); the attacker's subjects "
            "must be its own"
        )
    if not attack_ids:
        raise ConfigError("attack set: choose at least one of the attacker's own subjects")
    dev = resolve_device(device)
    adapter.to(dev)
    name, layers = adapter.resolve_tap(tap)
    prepared = data.prepare(adapter)
    attack = _targets(prepared, attack_ids, "attack subjects")
    targets = _targets(prepared, target_ids, "subjects to reconstruct")
    meta = {
        "tap": tap,
        "layers": layers,
        "threat_model": THREAT_MODEL,
        "victim": adapter.description,
        "trained_on": list(attack_ids),
        "source": "napari-invert plugin (own segmenter)",
    }
    return train_decoder_for_tap(
        _run(name, layers, prepared),
        adapter.tapper(layers),
        [s.image for s in attack],  # the attacker's own data ONLY
        stem,
        train,
        meta,
        base_filters=base_filters,
        loss=loss,
        device=dev,
        curve_path=stem.parent / "curve.csv",
        targets=(lambda: targets) if targets else None,
        recon_paths={t.subject_id: stem.parent / "recon" / f"{t.subject_id}.nii.gz" for t in targets},
        on_step=on_step,
        should_stop=should_stop,
    )


def reconstruct_own(
    adapter: Any,
    tap: str,
    data: OwnModelCohort,
    stem: Path,
    target_ids: Sequence[str],
    device: str = "auto",
) -> DecoderRun:
    """Reconstruct ``target_ids`` with the saved decoder at ``stem`` (made for ``tap``)."""
    from napari_invert.attack import load_decoder
    from napari_invert.attack.job import reconstruct_with_decoder
    from napari_invert.device import resolve_device

    dev = resolve_device(device)
    adapter.to(dev)
    name, layers = adapter.resolve_tap(tap)
    decoder, meta = load_decoder(stem, dev)
    if meta.get("layers") not in (None, layers):
        raise DataError(stem, f"decoder was trained on layers {meta['layers']}, not {layers} ('{tap}')")
    prepared = data.prepare(adapter)
    run = _run(name, layers, prepared)
    run.saved = stem
    targets = _targets(prepared, target_ids, "subjects")
    return reconstruct_with_decoder(run, adapter.tapper(layers), decoder, stem, targets, dev)


def _run(tap: str, layers: list[str], prepared: Any) -> DecoderRun:
    """An empty run on the prepared cohort's grid (affine, voxel size in mm)."""
    from napari_invert.attack.job import DecoderRun

    return DecoderRun(
        tap, list(layers), affine=prepared.affine, spacing=tuple(float(v) for v in prepared.voxel_mm)
    )
