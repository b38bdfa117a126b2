"""Worker-side jobs of the Attack widget: plain functions that only call the core.

They run inside a napari thread worker, receive data (paths, configs, subject ids) and
callbacks, and never touch Qt. The sequence is the study runner's
(:meth:`napari_invert.study.runner.StudyRunner._attack`): load the frozen victim, make the
tapper, build the decoder for it, train it on the attack set only, save it, reconstruct.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert.config import PreprocessConfig, TrainConfig
from napari_invert.errors import DataError
from napari_invert.study.results import StudyResults


@dataclass(frozen=True)
class StudyImages:
    """Images of a study folder (already preprocessed onto the model grid)."""

    results: StudyResults
    variant: str

    def load(self, subject_ids: Sequence[str], multiple_of: int) -> tuple[list[np.ndarray], np.ndarray]:
        """``(images (X, Y, Z) float32, model-grid affine)``; ``multiple_of`` is checked only."""
        images = [self.results.original(self.variant, s) for s in subject_ids]
        return images, self.results.affine


@dataclass(frozen=True)
class CohortImages:
    """Images of a raw cohort, preprocessed with ``preprocess`` for the given segmenter."""

    cohort_path: Path
    variant: str = "skull_stripped"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    label_mode: str = "restrict_to_mask"
    cache_dir: Path | None = None

    def load(self, subject_ids: Sequence[str], multiple_of: int) -> tuple[list[np.ndarray], np.ndarray]:
        from napari_invert.data.cohort import Cohort
        from napari_invert.data.prepare import prepare_cohort

        cohort = Cohort.from_path(self.cohort_path)
        prepared = prepare_cohort(
            cohort,
            self.preprocess,
            multiple_of,
            self.variant,
            self.label_mode,
            cache_dir=self.cache_dir,
            progress=False,
        )
        by_id = {s.subject_id: s for s in prepared.subjects}
        missing = [s for s in subject_ids if s not in by_id]
        if missing:
            raise DataError(self.cohort_path, f"subjects not in the cohort: {', '.join(missing)}")
        return [by_id[s].image for s in subject_ids], prepared.affine


Images = StudyImages | CohortImages


@dataclass
class TrainRequest:
    """Everything one decoder training needs (built by the Attack widget)."""

    images: Images
    segmenter_stem: Path
    tap: str
    attack_ids: list[str]
    target_ids: list[str]
    train: TrainConfig
    base_filters: int
    loss: str
    device: str
    decoder_stem: Path
    curve_path: Path | None  # written once, when the training has finished (never when cancelled)
    meta: dict[str, Any] = field(default_factory=dict)
    recon_paths: dict[str, Path] = field(default_factory=dict)  # target id -> NIfTI to write

    @property
    def resume_stem(self) -> Path:
        """The GUI's own resumable training state (kept when cancelled)."""
        return self.decoder_stem.with_name(self.decoder_stem.name + "_gui_resume")


@dataclass
class AttackOutcome:
    """What a training / reconstruction job returns to the GUI."""

    cancelled: bool = False
    steps_done: int = 0
    total_steps: int = 0
    final_loss: float | None = None
    saved: Path | None = None
    recons: dict[str, np.ndarray] = field(default_factory=dict)
    affine: np.ndarray | None = None
    message: str = ""
    written: list[Path] = field(default_factory=list)  # reconstructions saved as NIfTI


def save_recons(recons: dict[str, np.ndarray], paths: dict[str, Path], affine: np.ndarray) -> list[Path]:
    """Write each reconstruction that has a target path (atomically, via the core's writer)."""
    from napari_invert.data.nifti import save_nifti

    return [save_nifti(paths[sid], recon, affine) for sid, recon in recons.items() if sid in paths]


def train_decoder_job(
    request: TrainRequest,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AttackOutcome:
    """Train, save and (optionally) reconstruct; a cancel returns ``cancelled=True``.

    The training state is checkpointed to :attr:`TrainRequest.resume_stem`, so a cancelled
    training resumes where it stopped when started again with the same settings; the
    state is removed once the decoder is saved to ``decoder_stem``.
    """
    import torch

    from napari_invert.attack import (
        Cancelled,
        InversionDecoder,
        make_tapper,
        reconstruct,
        save_decoder,
        train_inversion_decoder,
    )
    from napari_invert.checkpoint import checkpoint_paths
    from napari_invert.device import resolve_device
    from napari_invert.models import load_segmenter, write_curve

    device = resolve_device(request.device)
    model, _ = load_segmenter(request.segmenter_stem, device)
    images, affine = request.images.load(request.attack_ids, model.multiple_of)
    tapper = make_tapper(model, request.tap)
    torch.manual_seed(request.train.seed)
    sample = torch.from_numpy(np.ascontiguousarray(images[0])[None, None]).to(device)
    decoder = InversionDecoder.for_tapper(tapper, sample, request.base_filters)
    outcome = AttackOutcome(total_steps=request.train.steps, affine=affine)
    try:
        rows = train_inversion_decoder(
            tapper,
            decoder,
            images,
            request.train,
            device,
            loss=request.loss,  # type: ignore[arg-type]
            checkpoint_stem=request.resume_stem,
            curve_path=None,  # the rows are kept in the resumable state; the curve is written at the end
            progress=False,
            on_step=on_step,
            should_stop=should_stop,
        )
    except Cancelled as exc:
        outcome.cancelled = True
        outcome.steps_done = exc.step
        outcome.message = str(exc)
        return outcome
    outcome.steps_done = len(rows)
    outcome.final_loss = float(rows[-1]["loss"]) if rows else None
    meta = {
        **request.meta,
        "tap": request.tap,
        "trained_on": list(request.attack_ids),
        "source": "napari-invert GUI",
    }
    outcome.saved = save_decoder(request.decoder_stem, decoder, meta)
    if request.curve_path is not None:
        write_curve(request.curve_path, rows)
    for path in checkpoint_paths(request.resume_stem):
        path.unlink(missing_ok=True)
    if request.target_ids and not (should_stop is not None and should_stop()):
        targets, target_affine = request.images.load(request.target_ids, model.multiple_of)
        recons = reconstruct(tapper, decoder, targets, device)
        outcome.recons = dict(zip(request.target_ids, recons))
        outcome.written = save_recons(outcome.recons, request.recon_paths, target_affine)
    outcome.message = f"decoder saved to {outcome.saved}"
    return outcome


def reconstruct_job(
    images: Images,
    segmenter_stem: Path,
    tap: str,
    decoder_stem: Path,
    target_ids: list[str],
    device: str = "auto",
    recon_paths: dict[str, Path] | None = None,
) -> AttackOutcome:
    """Load a trained decoder and reconstruct ``target_ids`` with it (saved to ``recon_paths``)."""
    from napari_invert.attack import load_decoder, make_tapper, reconstruct
    from napari_invert.device import resolve_device
    from napari_invert.models import load_segmenter

    dev = resolve_device(device)
    model, _ = load_segmenter(segmenter_stem, dev)
    decoder, meta = load_decoder(decoder_stem, dev)
    meta_tap = meta.get("tap") or (meta.get("decoder", {}).get("tapper") or {}).get("tap")
    if meta_tap and meta_tap != tap:
        raise DataError(decoder_stem, f"decoder was trained on tap '{meta_tap}', not '{tap}'")
    tapper = make_tapper(model, tap)
    targets, affine = images.load(target_ids, model.multiple_of)
    recons = reconstruct(tapper, decoder, targets, dev)
    outcome = AttackOutcome(
        recons=dict(zip(target_ids, recons)),
        affine=affine,
        message=f"reconstructed {len(recons)} subjects with {decoder_stem.name}",
    )
    outcome.written = save_recons(outcome.recons, recon_paths or {}, affine)
    return outcome
