"""Compare's overlay controls: which maps to compute, progress, Cancel, failures, deformation.

:class:`OverlayControls` is mixed into :class:`~napari_invert.widgets._compare_widget.CompareWidget`
(it uses the widget's controls and state, listed below); the maps themselves, their cache and
colour scales live in :mod:`._overlays`, their layers in :mod:`._grid`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_warning

from napari_invert.widgets._layers import OVERLAY_KINDS, OVERLAY_TITLES
from napari_invert.widgets._overlays import (
    OverlayKey,
    OverlayResult,
    compute_overlays,
    deformation_on_demand,
    overlay_key,
    overlay_requests,
)
from napari_invert.widgets._qt_util import blocked
from napari_invert.widgets._study_data import deformation_status
from napari_invert.widgets._workers import CancelToken

if TYPE_CHECKING:
    from napari_invert.widgets._core_api import Cell


class OverlayControls:
    """Overlay behaviour of the Compare widget.

    Expects on ``self``: ``overlay_boxes`` (kind -> QCheckBox), ``overlay_progress``,
    ``overlay_cancel``, ``deformation_note``, ``status``; ``_view``, ``_study``, ``_config``,
    ``_table``, ``_cache`` (``MapCache``), ``_pending`` (set of keys), ``_failed_kinds``,
    ``_overlay_token``, ``_relay``; and the methods ``_start`` and ``_sync_layers``.
    """

    _deformation_reason: str = ""
    _deformation_info: str = ""

    def cancel_overlays(self: Any) -> None:
        """Stop the running overlay computation after the current map."""
        if self._overlay_token is not None:
            self._overlay_token.cancel()
            self.status.setText("Cancelling the overlay maps…")

    def active_overlays(self: Any) -> list[str]:
        """The overlay kinds ticked and available, in display order."""
        return [
            k
            for k in OVERLAY_KINDS
            if self.overlay_boxes[k].isChecked() and self.overlay_boxes[k].isEnabled()
        ]

    def _overlay_key(self, kind: str, cell: Cell) -> OverlayKey:
        return overlay_key(kind, cell)

    # -- deformation availability -----------------------------------------------------------------
    def _update_deformation_reason(self: Any) -> None:
        study = self._study
        if study is None:
            return
        stored, _ = deformation_status(study, self._config, self._table)
        on_demand, why_not = deformation_on_demand()
        preset = self._config.evaluation.deformation.preset if self._config is not None else "fast"
        if on_demand:
            self._deformation_reason = ""
            self._deformation_info = (
                "stored maps where evaluated; " if stored else ""
            ) + f"other pairs registered on demand with ANTs (preset '{preset}')"
        elif stored:
            self._deformation_reason = ""
            self._deformation_info = f"stored maps only ({why_not})"
        else:
            self._deformation_reason = f"No deformation maps in this study and {why_not}."
            self._deformation_info = ""

    def _apply_deformation_state(self: Any) -> None:
        box = self.overlay_boxes["deformation"]
        reason = self._deformation_reason or self._failed_kinds.get("deformation", "")
        if reason:
            with blocked(box):
                box.setChecked(False)
            box.setEnabled(False)
            box.setToolTip(reason)
            self.deformation_note.setText(f"Deformation unavailable: {reason}")
        else:
            box.setEnabled(True)
            box.setToolTip(
                "Magnitude (mm) of the ANTs deformation mapping the reconstruction onto the original"
            )
            self.deformation_note.setText(f"Deformation: {self._deformation_info}")
        self.deformation_note.setToolTip(reason)

    # -- computing the maps ---------------------------------------------------------------------------
    def _ensure_overlays(self: Any) -> None:
        view, study = self._view, self._study
        if view is None or study is None:
            return
        preset = self._config.evaluation.deformation.preset if self._config is not None else "fast"
        requests = overlay_requests(
            view, study, self.active_overlays(), preset, lambda k: k in self._cache or k in self._pending
        )
        if not requests:
            return
        if self._overlay_token is not None:
            self._overlay_token.cancel()
        keys = [r.key for r in requests]
        self._pending.update(keys)
        cancel = self._overlay_token = CancelToken()
        kinds = sorted({k[0] for k in keys})
        self.overlay_progress.setRange(0, len(requests))
        self.overlay_progress.setValue(0)
        self.overlay_cancel.setEnabled(True)
        self.status.setText(
            f"Computing {', '.join(OVERLAY_TITLES[k] for k in kinds)}: 0/{len(requests)} maps…"
        )

        def done(result: OverlayResult) -> None:
            self._pending.difference_update(keys)
            if self._study is not study:  # another study was opened meanwhile
                return
            for key, value in result.maps.items():
                self._cache.put(key, value, result.maxima.get(key))
            for kind, message in result.errors.items():
                self._overlay_failed(kind, message)
            if result.cancelled and cancel is self._overlay_token:
                for kind in kinds:  # do not restart what the user stopped
                    if any(k not in self._cache for k in keys if k[0] == kind):
                        with blocked(self.overlay_boxes[kind]):
                            self.overlay_boxes[kind].setChecked(False)
                self.status.setText(f"Cancelled after {result.done}/{result.total} maps.")
            elif cancel is self._overlay_token:
                self.status.setText("")
            self._sync_layers()

        def finished_overlays() -> None:
            if cancel is self._overlay_token:
                self._overlay_token = None
                self.overlay_cancel.setEnabled(False)

        self._start(
            compute_overlays,
            requests,
            on_returned=done,
            what="compute overlays",
            on_errored=lambda _exc: self._pending.difference_update(keys),
            on_finished=finished_overlays,
            on_step=self._relay.emit,
            should_stop=cancel,
        )

    def _on_overlay_progress(self: Any, done: int, total: int, _loss: float) -> None:
        self.overlay_progress.setRange(0, max(1, total))
        self.overlay_progress.setValue(done)
        if total and self._overlay_token is not None and not self._overlay_token.cancelled:
            self.status.setText(f"Computing overlay maps: {done}/{total}…")

    def _overlay_failed(self: Any, kind: str, message: str) -> None:
        show_warning(f"napari-invert: {OVERLAY_TITLES[kind]} overlay failed: {message}")
        box = self.overlay_boxes[kind]
        with blocked(box):
            box.setChecked(False)
        box.setToolTip(f"Last attempt failed: {message}")
        if kind == "deformation":
            self._failed_kinds[kind] = message
            self._apply_deformation_state()
