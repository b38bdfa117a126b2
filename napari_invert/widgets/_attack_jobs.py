"""Worker-side jobs of the Attack widget for a study's (or a cohort's) trained segmenter:
plain functions that only call the core.

They run inside a napari thread worker, receive data (paths, configs, subject ids) and
callbacks, and never touch Qt. What is particular to a study victim is here: load the
frozen segmenter, make its tapper, load the attacker's images from the study folder (or
preprocess the cohort for the segmenter). Building, training, saving the decoder and
reconstructing are the core's :mod:`napari_invert.attack.job`, shared with the
own-segmenter mode (:mod:`napari_invert.audit.decoder`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert.config import PreprocessConfig, TrainConfig
from napari_invert.errors import DataError
from napari_invert.study.results import StudyResults

if TYPE_CHECKING:  # torch is imported by the worker, never when the plugin loads
    from napari_invert.attack.job import DecoderRun, Target


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
        from napari_invert.attack.job import resume_stem

        return resume_stem(self.decoder_stem)


def _targets(images: Images, ids: Sequence[str], multiple_of: int) -> tuple[list[Target], np.ndarray]:
    """``ids`` loaded from ``images`` as reconstruction targets, and their grid's affine."""
    from napari_invert.attack.job import Target

    loaded, affine = images.load(ids, multiple_of)
    return [Target(sid, image, affine) for sid, image in zip(ids, loaded)], affine


def train_decoder_job(
    request: TrainRequest,
    on_step: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DecoderRun:
    """Train, save and (optionally) reconstruct; a cancel returns ``cancelled=True``.

    The training state is checkpointed to :attr:`TrainRequest.resume_stem`, so a cancelled
    training resumes where it stopped when started again with the same settings; the
    state is removed once the decoder is saved to ``decoder_stem``.
    """
    from napari_invert.attack import make_tapper
    from napari_invert.attack.job import DecoderRun, train_decoder_for_tap
    from napari_invert.device import resolve_device
    from napari_invert.models import load_segmenter

    device = resolve_device(request.device)
    model, _ = load_segmenter(request.segmenter_stem, device)
    images, affine = request.images.load(request.attack_ids, model.multiple_of)
    meta = {
        **request.meta,
        "tap": request.tap,
        "trained_on": list(request.attack_ids),
        "source": "napari-invert GUI",
    }

    def targets() -> list[Target]:  # loaded only once the decoder is trained
        return _targets(request.images, request.target_ids, model.multiple_of)[0]

    return train_decoder_for_tap(
        DecoderRun(tap=request.tap, affine=affine),
        make_tapper(model, request.tap),
        images,
        request.decoder_stem,
        request.train,
        meta,
        base_filters=request.base_filters,
        loss=request.loss,
        device=device,
        curve_path=request.curve_path,
        targets=targets if request.target_ids else None,
        recon_paths=request.recon_paths,
        on_step=on_step,
        should_stop=should_stop,
    )


def reconstruct_job(
    images: Images,
    segmenter_stem: Path,
    tap: str,
    decoder_stem: Path,
    target_ids: list[str],
    device: str = "auto",
    recon_paths: dict[str, Path] | None = None,
) -> DecoderRun:
    """Load a trained decoder and reconstruct ``target_ids`` with it (saved to ``recon_paths``)."""
    from napari_invert.attack import load_decoder, make_tapper
    from napari_invert.attack.job import DecoderRun, reconstruct_with_decoder
    from napari_invert.device import resolve_device
    from napari_invert.models import load_segmenter

    dev = resolve_device(device)
    model, _ = load_segmenter(segmenter_stem, dev)
    decoder, meta = load_decoder(decoder_stem, dev)
    meta_tap = meta.get("tap") or (meta.get("decoder", {}).get("tapper") or {}).get("tap")
    if meta_tap and meta_tap != tap:
        raise DataError(decoder_stem, f"decoder was trained on tap '{meta_tap}', not '{tap}'")
    tapper = make_tapper(model, tap)
    targets, affine = _targets(images, target_ids, model.multiple_of)
    run = DecoderRun(tap=tap, affine=affine)
    return reconstruct_with_decoder(run, tapper, decoder, decoder_stem, targets, dev, recon_paths)
