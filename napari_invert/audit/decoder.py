"""One inversion decoder against the user's own model, outside a full audit (the plugin's
Attack dock; threat model **feature inversion**).

The same steps as one attack of :class:`~napari_invert.audit.AuditRunner`, for one tap:
the cohort is preprocessed as the audit config says (``preprocess:``, ``cohort.label_mode``)
onto a grid divisible by the adapter's ``multiple_of`` and checked against the network
(:meth:`ModelAdapter.check_grid`); the model is tapped with the adapter's own tapper
(hooks, or graph values for TorchScript); the decoder is trained on the attacker's subjects
only (resumable, cancellable), saved (safetensors + JSON) and reconstructs the targets,
which are written as NIfTI beside it.

Where things go (:func:`decoder_stem`): ``<model source folder>/<source stem>_napari_invert/
<tap slug>/decoder.{safetensors,json}``, ``decoder_gui_resume.*`` while training,
``curve.csv`` and ``recon/<subject>.nii.gz``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert.config import CohortConfig, PreprocessConfig, TrainConfig
from napari_invert.errors import ConfigError, DataError
from napari_invert.study.layout import tap_slug

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


def resume_stem(stem: Path) -> Path:
    """The resumable training state of the decoder at ``stem`` (kept when cancelled)."""
    return stem.with_name(stem.name + "_gui_resume")


@dataclass
class OwnDecoderRun:
    """What :func:`train_own_decoder` / :func:`reconstruct_own` return.

    ``recons`` / ``originals``: subject -> ``(X, Y, Z)`` float32 on the model grid;
    ``written``: the reconstructions saved as NIfTI."""

    tap: str
    layers: list[str]
    cancelled: bool = False
    steps_done: int = 0
    total_steps: int = 0
    final_loss: float | None = None
    saved: Path | None = None
    recons: dict[str, np.ndarray] = field(default_factory=dict)
    originals: dict[str, np.ndarray] = field(default_factory=dict)
    affine: np.ndarray | None = None
    spacing: tuple[float, float, float] | None = None
    written: list[Path] = field(default_factory=list)
    message: str = ""


def _pick(prepared: Any, ids: Sequence[str], what: str) -> list[Any]:
    by_id = {s.subject_id: s for s in prepared.subjects}
    missing = [s for s in ids if s not in by_id]
    if missing:
        raise DataError(
            Path(str(getattr(prepared, "name", "cohort"))), f"{what} not in the cohort: {', '.join(missing)}"
        )
    return [by_id[s] for s in ids]


def _reconstruct_into(run: OwnDecoderRun, tapper, decoder, targets, device, out_dir: Path | None) -> None:
    from napari_invert.attack import reconstruct
    from napari_invert.data.nifti import save_nifti

    recons = reconstruct(tapper, decoder, [s.image for s in targets], device)
    for subject, recon in zip(targets, recons):
        run.recons[subject.subject_id] = recon
        run.originals[subject.subject_id] = subject.image
        if out_dir is not None:
            run.written.append(save_nifti(out_dir / f"{subject.subject_id}.nii.gz", recon, subject.affine))


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
) -> OwnDecoderRun:
    """Train a decoder inverting ``tap`` of the user's model on ``attack_ids`` only, save it
    at ``stem`` and reconstruct ``target_ids``; a cancel returns ``cancelled=True`` (the
    training state is kept at :func:`resume_stem` and continues on the next call).

    ``tap``: a role (``bottleneck+skips``) or layer name(s) (see ``napari-invert taps``);
    ``trained_on``: the subjects that trained the user's model; an attack set that
    overlaps them is refused (the attacker's data are its own).
    """
    import torch

    from napari_invert.attack import Cancelled, InversionDecoder, save_decoder, train_inversion_decoder
    from napari_invert.checkpoint import checkpoint_paths
    from napari_invert.device import resolve_device
    from napari_invert.models import write_curve

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
    attack = _pick(prepared, attack_ids, "attack subjects")
    targets = _pick(prepared, target_ids, "subjects to reconstruct")
    tapper = adapter.tapper(layers)
    torch.manual_seed(train.seed)
    sample = torch.from_numpy(np.ascontiguousarray(attack[0].image)[None, None]).to(dev)
    decoder = InversionDecoder.for_tapper(tapper, sample, base_filters)
    run = OwnDecoderRun(name, layers, total_steps=train.steps, affine=prepared.affine)
    run.spacing = tuple(float(v) for v in prepared.voxel_mm)
    try:
        rows = train_inversion_decoder(
            tapper,
            decoder,
            [s.image for s in attack],  # the attacker's own data ONLY
            train,
            dev,
            loss=loss,  # type: ignore[arg-type]
            checkpoint_stem=resume_stem(stem),
            progress=False,
            on_step=on_step,
            should_stop=should_stop,
        )
    except Cancelled as exc:
        run.cancelled, run.steps_done, run.message = True, exc.step, str(exc)
        return run
    run.steps_done = len(rows)
    run.final_loss = float(rows[-1]["loss"]) if rows else None
    meta = {
        "tap": tap,
        "layers": layers,
        "threat_model": THREAT_MODEL,
        "victim": adapter.description,
        "trained_on": list(attack_ids),
        "source": "napari-invert plugin (own segmenter)",
    }
    run.saved = save_decoder(stem, decoder, meta)
    write_curve(stem.parent / "curve.csv", rows)
    for path in checkpoint_paths(resume_stem(stem)):
        path.unlink(missing_ok=True)
    if targets and not (should_stop is not None and should_stop()):
        _reconstruct_into(run, tapper, decoder, targets, dev, stem.parent / "recon")
    run.message = f"decoder saved to {run.saved}"
    return run


def reconstruct_own(
    adapter: Any,
    tap: str,
    data: OwnModelCohort,
    stem: Path,
    target_ids: Sequence[str],
    device: str = "auto",
) -> OwnDecoderRun:
    """Reconstruct ``target_ids`` with the saved decoder at ``stem`` (made for ``tap``)."""
    from napari_invert.attack import load_decoder
    from napari_invert.device import resolve_device

    dev = resolve_device(device)
    adapter.to(dev)
    name, layers = adapter.resolve_tap(tap)
    decoder, meta = load_decoder(stem, dev)
    if meta.get("layers") not in (None, layers):
        raise DataError(stem, f"decoder was trained on layers {meta['layers']}, not {layers} ('{tap}')")
    prepared = data.prepare(adapter)
    run = OwnDecoderRun(name, layers, affine=prepared.affine, saved=stem)
    run.spacing = tuple(float(v) for v in prepared.voxel_mm)
    _reconstruct_into(
        run, adapter.tapper(layers), decoder, _pick(prepared, target_ids, "subjects"), dev, None
    )
    run.message = f"reconstructed {len(run.recons)} subjects with {stem.name}"
    return run
