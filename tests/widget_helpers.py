"""Helpers shared by the napari GUI test modules (``tests/test_widgets_*.py``).

Importing this module pins the import order torch needs under Xvfb (see below) and gives
the display check, napari notification counters, the managed-layer filters and a helper
that opens a study in the Compare widget. napari is imported lazily, inside the helpers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
# torch (and the LLVM inside triton, which torch loads lazily) must come before the first
# OpenGL context: with Mesa's software renderer (llvmpipe, e.g. under Xvfb) loading a
# second LLVM afterwards crashes the process. The napari plugin itself never imports torch
# in the main thread before a worker needs it; this only pins the order for the GUI tests.
pytest.importorskip("torch")
import torch._dynamo  # noqa: F401  (loads triton now, before any viewer exists)

MANIFEST = Path(__file__).resolve().parent.parent / "napari_invert" / "napari.yaml"
#: How long (ms) a GUI test waits for a worker before failing.
WAIT_MS = 60_000


def display_problem() -> str | None:
    """Why GUI tests cannot run here (checked after pytest-xvfb has set ``DISPLAY``)."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        return "Qt's offscreen platform crashes napari when an image layer is added; run under Xvfb"
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display: install Xvfb (pytest-xvfb then starts it) or run under xvfb-run"
    return None


#: Applied with ``@pytest.mark.gui`` to every test that opens a viewer.
needs_display = pytest.mark.skipif(display_problem() is not None, reason=display_problem() or "")


def n_records() -> int:
    """How many notifications napari has recorded so far."""
    from napari.utils.notifications import notification_manager

    return len(notification_manager.records)


def errors_since(start: int) -> list[str]:
    """The ERROR notifications recorded after the first ``start`` records."""
    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [
        str(n.message)
        for n in notification_manager.records[start:]
        if n.severity == NotificationSeverity.ERROR
    ]


def managed(viewer, role: str | None = None) -> list:
    """The layers the plugin manages (optionally only those of one ``role``), in layer order."""
    from napari_invert.widgets._layers import META_KEY

    out = [lyr for lyr in viewer.layers if META_KEY in lyr.metadata]
    return [lyr for lyr in out if role is None or lyr.metadata[META_KEY]["role"] == role]


def cell_titles(viewer) -> list[str]:
    """The titles of the grid cells, in grid order."""
    from napari_invert.widgets._grid import cell_titles as titles

    return titles(viewer)


def experiment_title(experiment) -> str:
    """The title a grid cell shows for an experiment's reconstruction."""
    from napari_invert.widgets._layers import experiment_title as title

    return title(experiment)


def open_compare(viewer, qtbot, folder: Path):
    """Dock a Compare widget, open ``folder`` and wait until the first subject is shown."""
    from napari_invert.widgets._compare_widget import CompareWidget

    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare, name="Compare")
    assert compare.open(folder) is not None
    qtbot.waitUntil(lambda: not compare.busy and compare.current_view is not None, timeout=WAIT_MS)
    return compare


def train_and_cancel(attack, qtbot, wait_ms: int = WAIT_MS):
    """Start a long (100,000-step) CPU training in an Attack dock, cancel it once two steps
    are done, wait for its worker to stop and return the outcome (checked: cancelled)."""
    attack.steps.setValue(100_000)
    attack.device_combo.setCurrentText("cpu")
    assert attack.start_training()
    assert attack.cancel_button.isEnabled() and not attack.train_button.isEnabled()
    qtbot.waitUntil(lambda: attack.progress.value() >= 2, timeout=wait_ms)
    attack.cancel()
    qtbot.waitUntil(lambda: not attack.running, timeout=wait_ms)
    outcome = attack.last_outcome
    assert outcome is not None and outcome.cancelled and 2 <= outcome.steps_done < 100_000
    return outcome
