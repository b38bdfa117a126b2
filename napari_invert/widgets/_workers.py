"""Thread-worker plumbing shared by the widgets.

Long work (reading volumes, SSIM maps, ANTs registration, decoder training) runs in a
napari thread worker so the viewer stays responsive. The rules every widget follows:

* the function run in the worker is a plain module-level function that receives data
  (paths, arrays, configs), never a widget or the viewer, so a traceback kept by napari's
  notification manager cannot keep a closed viewer alive;
* every worker has an ``errored`` handler (so superqt does not re-raise the error in the
  main thread, where it would escape to Qt) that shows ``context: message`` in the
  viewer's notification area. Workers are made by napari's ``create_worker`` with
  superqt's plain worker class, so napari does not also relay (and keep) the exception
  with its traceback;
* progress from a callback-style core function (``on_step(step, total, loss)``) reaches
  the GUI through :class:`ProgressRelay`, a ``QObject`` living in the main thread, so the
  callback is delivered by a queued connection and never touches a widget from the worker
  thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, Signal, Slot
from superqt.utils import FunctionWorker as _PlainFunctionWorker

from napari_invert.errors import NapariInvertError


class CancelToken:
    """A thread-safe flag: the GUI sets it, the core's ``should_stop()`` reads it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the running job to stop at its next check."""
        self._event.set()

    def __call__(self) -> bool:
        """``True`` once :meth:`cancel` was called (usable as ``should_stop``)."""
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class ProgressRelay(QObject):
    """Carries ``(step, total, loss)`` from a worker thread to a main-thread callback.

    Create it in the main thread; pass :meth:`emit` to the core function as ``on_step``.
    """

    step = Signal(int, int, float)

    def __init__(self, callback: Callable[[int, int, float], None]) -> None:
        super().__init__()
        self._callback = callback
        self.step.connect(self._deliver)

    def emit(self, step: int, total: int, loss: float | None = None) -> None:
        """Thread-safe: queue one progress update for the main thread."""
        self.step.emit(int(step), int(total), float("nan") if loss is None else float(loss))

    @Slot(int, int, float)
    def _deliver(self, step: int, total: int, loss: float) -> None:
        try:
            self._callback(step, total, loss)
        except Exception as exc:  # a GUI update must never raise into Qt
            report_error("progress update failed", exc)


def describe_error(exc: BaseException) -> str:
    """One-line description: our own errors already name the file and the problem."""
    if isinstance(exc, NapariInvertError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def report_error(context: str, exc: BaseException) -> str:
    """Show ``context: message`` in the viewer's notification area and return it."""
    message = f"{context}: {describe_error(exc)}"
    show_error(message)
    return message


def start_worker(
    func: Callable[..., Any],
    *args: Any,
    on_returned: Callable[[Any], None] | None = None,
    on_errored: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    context: str = "napari-invert",
    **kwargs: Any,
) -> FunctionWorker:
    """Run ``func(*args, **kwargs)`` in a napari thread worker and return the started worker.

    An exception in ``func`` is shown as ``context: message`` in the viewer, then passed to
    ``on_errored`` (e.g. to reset the widget); it never reaches Qt.
    """

    def errored(exc: BaseException) -> None:
        report_error(context, exc)
        if on_errored is not None:
            on_errored(exc)

    connect: dict[str, Callable[..., Any]] = {"errored": _guard(errored, "error handler")}
    if on_returned is not None:
        connect["returned"] = _guard(on_returned, "result handler")
    if on_finished is not None:
        connect["finished"] = _guard(on_finished, "cleanup")
    worker = create_worker(
        func, *args, _connect=connect, _start_thread=True, _worker_class=_PlainFunctionWorker, **kwargs
    )
    return worker  # type: ignore[return-value]


def guard_slot(callback: Callable[[], Any], what: str) -> Callable[..., None]:
    """A button/menu slot that never raises into Qt: a failure is shown in the viewer.

    The signal's arguments (e.g. ``clicked(checked)``) are dropped; ``callback()`` is
    called without arguments.
    """

    def slot(*_args: Any) -> None:
        try:
            callback()
        except Exception as exc:
            report_error(f"napari-invert: {what} failed", exc)

    return slot


def guard(callback: Callable[..., None], what: str) -> Callable[..., None]:
    """Wrap a main-thread callback that takes the signal's arguments (see :func:`guard_slot`)."""
    return _guard(callback, what)


def _guard(callback: Callable[..., None], what: str) -> Callable[..., None]:
    """Wrap a main-thread callback so an exception in it is shown, not raised into Qt."""

    def guarded(*args: Any) -> None:
        try:
            callback(*args)
        except Exception as exc:
            report_error(f"napari-invert {what} failed", exc)

    return guarded
