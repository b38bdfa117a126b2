"""Open a study in a viewer with the plugin's docks (used by ``napari-invert view``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_study_in_viewer(viewer: Any, study: str | Path) -> tuple[Any, Any]:
    """Dock the Study and Compare widgets on ``viewer`` and open ``study`` in both.

    Returns ``(study_widget, compare_widget)``. A bad folder is reported in the viewer (the
    widgets' own error handling), never raised.
    """
    from napari_invert.widgets._compare_widget import CompareWidget
    from napari_invert.widgets._study_widget import StudyWidget

    study_widget = StudyWidget(viewer)
    viewer.window.add_dock_widget(study_widget, name="Study", area="left")
    compare = CompareWidget(viewer)
    viewer.window.add_dock_widget(compare, name="Compare", area="right")
    study_widget.open(study)
    compare.open(study)
    return study_widget, compare
