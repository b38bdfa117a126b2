"""One interactive decoder job (threat model **feature inversion**): the steps the plugin's
Attack dock runs in a thread worker, whichever victim it attacks.

The caller supplies what differs between victims (a study's / cohort's trained segmenter,
:mod:`napari_invert.widgets._attack_jobs`; the user's own model through its adapter,
:mod:`napari_invert.audit.decoder`): the tapper, the attacker's images, the targets and
the decoder's metadata. This module does the rest, once for both:

* :func:`train_decoder_for_tap`: build the decoder for the tapper (seeded), train it on the
  attacker's images only with progress (``on_step``), cancel (``should_stop``) and resume
  (the state at :func:`resume_stem`, kept when cancelled), save it (safetensors + JSON),
  write its curve, then reconstruct the targets and write them as NIfTI;
* :func:`reconstruct_with_decoder`: reconstruct targets with a decoder already trained.

No napari or Qt here; both return a :class:`DecoderRun` for the GUI to show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert.config import TrainConfig

if TYPE_CHECKING:
    from napari_invert.attack.decoder import InversionDecoder
    from napari_invert.attack.taps import Tapper

OnStep = Callable[[int, int, float], None]
ShouldStop = Callable[[], bool]


@dataclass
class DecoderRun:
    """What a decoder job returns to the GUI.

    ``tap`` / ``layers``: the tap as resolved (own model: its layer names; a study victim
    leaves ``layers`` empty); ``recons`` / ``originals``: subject -> ``(X, Y, Z)`` float32
    on the model grid; ``affine``: the model grid's 4x4 (mm); ``spacing``: voxel size (mm)
    where known; ``saved``: the decoder's JSON (or stem, when only loaded); ``written``:
    the reconstructions saved as NIfTI. A cancelled training has ``cancelled=True`` and
    ``steps_done`` < ``total_steps``.
    """

    tap: str = ""
    layers: list[str] = field(default_factory=list)
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


@dataclass(frozen=True)
class Target:
    """A subject to reconstruct: its image ``(X, Y, Z)`` float32 on the model grid and that
    grid's 4x4 affine (mm), used when the reconstruction is written as NIfTI."""

    subject_id: str
    image: np.ndarray
    affine: np.ndarray


def resume_stem(stem: Path) -> Path:
    """The resumable training state of the decoder at ``stem`` (kept when cancelled)."""
    return stem.with_name(stem.name + "_gui_resume")


def stopped(should_stop: ShouldStop | None) -> bool:
    """``True`` once the GUI asked the job to stop."""
    return should_stop is not None and should_stop()


def train_decoder_for_tap(
    run: DecoderRun,
    tapper: Tapper,
    attack_images: Sequence[np.ndarray],
    stem: Path,
    train: TrainConfig,
    meta: dict[str, Any],
    *,
    base_filters: int,
    loss: str,
    device: Any,
    curve_path: Path | None,
    targets: Callable[[], Sequence[Target]] | None = None,
    recon_paths: Mapping[str, Path] | None = None,
    on_step: OnStep | None = None,
    should_stop: ShouldStop | None = None,
) -> DecoderRun:
    """Train a decoder inverting ``tapper`` on ``attack_images`` only, save it at ``stem``
    with ``meta`` and reconstruct what ``targets()`` loads; fills and returns ``run``.

    ``attack_images``: the attacker's own ``(X, Y, Z)`` float32 volumes (one shape);
    ``device``: a resolved torch device. A cancel (``should_stop``) returns ``run`` with
    ``cancelled=True``; the state at :func:`resume_stem` is kept, so the same call
    continues where it stopped, and no curve is written. On success the curve goes to
    ``curve_path`` (if any), the resume state is removed, and, unless stopped meanwhile,
    ``targets()`` (called only then) are reconstructed; those with a path in
    ``recon_paths`` are written there.
    """
    import torch

    from napari_invert.attack.decoder import InversionDecoder, save_decoder
    from napari_invert.attack.training import train_inversion_decoder
    from napari_invert.checkpoint import checkpoint_paths
    from napari_invert.models.training import Cancelled, write_curve

    torch.manual_seed(train.seed)
    sample = torch.from_numpy(np.ascontiguousarray(attack_images[0])[None, None]).to(device)
    decoder = InversionDecoder.for_tapper(tapper, sample, base_filters)
    run.total_steps = train.steps
    try:
        rows = train_inversion_decoder(
            tapper,
            decoder,
            attack_images,  # the attacker's own data ONLY
            train,
            device,
            loss=loss,  # type: ignore[arg-type]
            checkpoint_stem=resume_stem(stem),
            curve_path=None,  # the rows are kept in the resumable state; the curve is written at the end
            progress=False,
            on_step=on_step,
            should_stop=should_stop,
        )
    except Cancelled as exc:
        run.cancelled, run.steps_done, run.message = True, exc.step, str(exc)
        return run
    run.steps_done = len(rows)
    run.final_loss = float(rows[-1]["loss"]) if rows else None
    run.saved = save_decoder(stem, decoder, meta)
    if curve_path is not None:
        write_curve(curve_path, rows)
    for path in checkpoint_paths(resume_stem(stem)):
        path.unlink(missing_ok=True)
    if targets is not None and not stopped(should_stop):
        reconstruct_targets(run, tapper, decoder, targets(), device, recon_paths)
    run.message = f"decoder saved to {run.saved}"
    return run


def reconstruct_with_decoder(
    run: DecoderRun,
    tapper: Tapper,
    decoder: InversionDecoder,
    stem: Path,
    targets: Sequence[Target],
    device: Any,
    recon_paths: Mapping[str, Path] | None = None,
) -> DecoderRun:
    """Reconstruct ``targets`` with the loaded decoder of ``stem``; fills and returns ``run``."""
    reconstruct_targets(run, tapper, decoder, targets, device, recon_paths)
    run.message = f"reconstructed {len(run.recons)} subjects with {stem.name}"
    return run


def reconstruct_targets(
    run: DecoderRun,
    tapper: Tapper,
    decoder: InversionDecoder,
    targets: Sequence[Target],
    device: Any,
    recon_paths: Mapping[str, Path] | None = None,
) -> None:
    """Add each target's reconstruction and original to ``run``; write those with a path in
    ``recon_paths`` as NIfTI on the target's grid (atomically)."""
    from napari_invert.attack.training import reconstruct
    from napari_invert.data.nifti import save_nifti

    paths = recon_paths or {}
    recons = reconstruct(tapper, decoder, [t.image for t in targets], device)
    for target, recon in zip(targets, recons):
        run.recons[target.subject_id] = recon
        run.originals[target.subject_id] = target.image
        if target.subject_id in paths:
            run.written.append(save_nifti(paths[target.subject_id], recon, target.affine))
