"""What the Attack dock's two modes share: a study's (or cohort's) victims
(:mod:`._attack_widget`) and the user's own segmenter (:mod:`._attack_own`).

* :class:`DecoderJobs`: one decoder training or reconstruction at a time in a napari thread
  worker; the progress bar follows the training's steps, Cancel asks it to stop at its next
  step (its resumable state is kept), the dock is told when the worker starts and ends;
* :func:`check_attack_set` / :func:`refuse`: the checks before a training, one line each;
* :func:`report_cancelled`, :func:`loss_text`: the status line of a finished run;
* :func:`fill_combo`, :func:`fill_subject_list`, :func:`chosen_decoder`: the controls;
* :func:`add_volume`, :func:`show_pairs`: results in the viewer (original | reconstruction
  rows in napari's grid).

The jobs themselves are plain functions that only call the core
(:mod:`napari_invert.attack.job`); nothing here imports another widget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QLabel, QListWidget, QListWidgetItem, QProgressBar

from napari_invert.errors import NapariInvertError
from napari_invert.widgets._qt_util import blocked
from napari_invert.widgets._workers import CancelToken, ProgressRelay, describe_error, start_worker

if TYPE_CHECKING:
    from napari_invert.attack.job import DecoderRun

#: original | reconstruction rows shown in the viewer after a run (all are saved)
SHOWN_PAIRS = 3


class DecoderJobs:
    """Runs the Attack dock's decoder jobs in a thread worker, one at a time.

    ``progress`` / ``status``: the dock's progress bar and status line; ``on_change``:
    called when a job starts and when it has ended (to enable / disable the controls).
    """

    def __init__(self, progress: QProgressBar, status: QLabel, on_change: Callable[[], None]) -> None:
        self.progress = progress
        self.status = status
        self._on_change = on_change
        self._worker: Any = None
        self._token: CancelToken | None = None
        self._relay: ProgressRelay | None = None

    @property
    def running(self) -> bool:
        """True while a training or reconstruction worker runs."""
        return self._worker is not None

    def train(
        self,
        func: Callable[..., DecoderRun],
        *args: Any,
        steps: int,
        text: str,
        on_done: Callable[[DecoderRun], None],
    ) -> None:
        """Run ``func(*args, on_step=..., should_stop=...)``: progress over ``steps``, cancellable."""
        self._token = CancelToken()
        self._relay = ProgressRelay(self._on_progress)
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.status.setText(text)
        self._start(
            func, *args, what="training", on_done=on_done, on_step=self._relay.emit, should_stop=self._token
        )

    def reconstruct(
        self, func: Callable[..., DecoderRun], *args: Any, text: str, on_done: Callable[[DecoderRun], None]
    ) -> None:
        """Run ``func(*args)`` with a busy indicator (a reconstruction has no steps to count)."""
        self.progress.setRange(0, 0)
        self.status.setText(text)
        self._start(func, *args, what="reconstruction", on_done=on_done)

    def cancel(self) -> None:
        """Ask the running training to stop at its next step (its state is kept)."""
        if self._token is not None and not self._token.cancelled:
            self._token.cancel()
            self.status.setText("Cancelling…")

    def _start(
        self, func: Callable[..., Any], *args: Any, what: str, on_done: Callable[[Any], None], **kwargs: Any
    ) -> None:
        def errored(exc: BaseException) -> None:
            self.status.setText(f"{what.capitalize()} failed: {describe_error(exc)}")

        self._worker = start_worker(
            func,
            *args,
            on_returned=on_done,
            on_errored=errored,
            on_finished=self._on_finished,
            context=f"napari-invert: {what} failed",
            **kwargs,
        )
        self._on_change()

    def _on_progress(self, step: int, total: int, loss: float) -> None:
        if self.progress.maximum() != total:
            self.progress.setRange(0, total)
        self.progress.setValue(step)
        self.status.setText(
            f"Step {step}/{total}, loss {loss:.5f}"
            + (" (cancelling…)" if self._token and self._token.cancelled else "")
        )

    def _on_finished(self) -> None:
        self._worker = None
        self._token = None
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self._on_change()


def check_attack_set(
    decoder: Path, replace: bool, attack_ids: Sequence[str], trained_on: Iterable[str], whose: str
) -> None:
    """NapariInvertError (one line) unless a training may start: an existing decoder is only
    replaced when ``replace`` is ticked; the attack set is not empty and holds none of the
    victim's training subjects ``trained_on`` (``whose``: how the message names them)."""
    if decoder.with_suffix(".json").is_file() and not replace:
        raise NapariInvertError(f"{decoder}: a decoder already exists; tick 'Replace an existing decoder'")
    if not attack_ids:
        raise NapariInvertError("tick at least one attack subject")
    overlap = sorted(set(attack_ids) & set(trained_on))
    if overlap:
        raise NapariInvertError(f"the attack set must not contain {whose}: untick {', '.join(overlap)}")


def refuse(status: QLabel, message: str) -> bool:
    """Show why an action is refused (status line and viewer notification); ``False``."""
    status.setText(message)
    show_error(f"napari-invert: {message}")
    return False


def report_cancelled(status: QLabel, run: DecoderRun) -> bool:
    """A cancelled training: say how far it got and how to resume; ``True`` if it was."""
    if not run.cancelled:
        return False
    status.setText(
        f"Cancelled after {run.steps_done}/{run.total_steps} steps; Train again (same settings) to resume."
    )
    show_warning(f"napari-invert: training cancelled ({run.message})")
    return True


def loss_text(run: DecoderRun) -> str:
    """``", final loss 0.01234"`` (empty when no step was run)."""
    return "" if run.final_loss is None else f", final loss {run.final_loss:.5f}"


def chosen_decoder(file_edit: Any) -> Path | None:
    """The decoder stem chosen in the dock's file field (``.json`` / ``.safetensors`` dropped),
    ``None`` when the field is empty."""
    chosen = str(file_edit.value or "")
    if chosen in ("", "."):
        return None
    stem = Path(chosen)
    return stem.with_suffix("") if stem.suffix in (".json", ".safetensors") else stem


def fill_combo(combo: QComboBox, items: Iterable[str | tuple[str, Any]]) -> None:
    """Replace ``combo``'s items (text, or ``(text, data)``) without emitting its signals."""
    with blocked(combo):
        combo.clear()
        for item in items:
            text, data = item if isinstance(item, tuple) else (item, None)
            combo.addItem(text, data)


def fill_subject_list(list_widget: QListWidget, rows: Iterable[tuple[str, str, bool]]) -> None:
    """Replace the attack list: checkable ``(subject id, text, ticked)`` rows; the id is the
    item's ``Qt.UserRole`` data."""
    list_widget.clear()
    for sid, text, ticked in rows:
        item = QListWidgetItem(text)
        item.setData(Qt.UserRole, sid)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked if ticked else Qt.Unchecked)
        list_widget.addItem(item)


def add_volume(viewer: Any, data: Any, name: str, scale: Sequence[float] | None) -> Any:
    """Add a grey ``(X, Y, Z)`` volume with voxel size ``scale`` (mm; 1 mm when unknown)."""
    return viewer.add_image(data, name=name, scale=scale or (1.0, 1.0, 1.0), colormap="gray")


def show_pairs(viewer: Any, run: DecoderRun, label: str, shown: int = SHOWN_PAIRS) -> None:
    """The first ``shown`` subjects of ``run`` as original | reconstruction rows in napari's
    grid (reconstructions named ``<id> reconstruction (<label>)``)."""
    # napari's grid fills its cells in layer order: one row per subject, original | reconstruction
    for sid in list(run.recons)[:shown]:
        add_volume(viewer, run.originals[sid], f"{sid} original", run.spacing)
        add_volume(viewer, run.recons[sid], f"{sid} reconstruction ({label})", run.spacing)
    if run.recons:
        viewer.grid.enabled = True
        viewer.grid.stride = 1
        viewer.grid.shape = (-1, 2)  # original | reconstruction, one subject a row
