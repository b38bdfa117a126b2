"""Small Qt helpers every widget may use (no widget of its own, no napari state).

* :func:`unwrap_viewer`: the real viewer behind napari's proxy (the session registry key);
* :func:`scrolled`: a scroll area for a tall form in a short dock;
* :func:`blocked`: block a widget's signals during a programmatic update.

Widgets import these from here, never from one another (they talk through
:class:`~napari_invert.widgets._state.SessionState`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


def unwrap_viewer(viewer: Any) -> Any:
    """The real viewer behind napari's ``PublicOnlyProxy`` (the registry key)."""
    return getattr(viewer, "__wrapped__", viewer)


def scrolled(widget: QWidget) -> QWidget:
    """Give ``widget`` a vertical scroll area and return the page to lay out inside it.

    Dock areas are often shorter than a tall form; scrolling beats squeezed controls.
    """
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    page = QWidget()
    area.setWidget(page)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return page


@contextlib.contextmanager
def blocked(widget: QWidget) -> Iterator[QWidget]:
    """Block a widget's signals for the duration of a programmatic update."""
    old = widget.blockSignals(True)
    try:
        yield widget
    finally:
        widget.blockSignals(old)
