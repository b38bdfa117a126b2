"""Open a study in a viewer with the plugin's docks (``napari-invert view``, a dropped study)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_invert.widgets._state import session_for


def open_study_in_viewer(viewer: Any, study: str | Path) -> tuple[Any, Any]:
    """Dock the Study and Compare widgets on ``viewer`` and open ``study``.

    Returns ``(study_widget, compare_widget)``. Only the Study widget opens the folder (the
    Compare widget receives it through the viewer's session), so a bad folder is reported
    once, in the viewer, never raised. Docks already made by this function are reused.
    """
    from napari_invert.widgets._compare_widget import CompareWidget
    from napari_invert.widgets._study_widget import StudyWidget

    session = session_for(getattr(viewer, "__wrapped__", viewer))
    docks = session.launched_docks
    if docks is not None:
        try:
            docks[0].objectName(), docks[1].objectName()  # raises once Qt deleted them
        except RuntimeError:
            docks = None
    if docks is None:
        study_widget = StudyWidget(viewer)
        viewer.window.add_dock_widget(study_widget, name="Study", area="left")
        compare = CompareWidget(viewer)
        viewer.window.add_dock_widget(compare, name="Compare", area="right")
        docks = session.launched_docks = (study_widget, compare)
    study_widget, compare = docks
    study_widget.open(study)
    return study_widget, compare
