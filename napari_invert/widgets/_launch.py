"""Dock the plugin's widgets: a study with its docks (``napari-invert view``, a dropped
study) and the similarity-matrix dock Compare opens. The widgets themselves never import
one another; they talk through the viewer's :class:`~napari_invert.widgets._state.SessionState`."""

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


def dock_similarity_matrix(viewer: Any) -> tuple[Any, str]:
    """Make a similarity-matrix dock on ``viewer``, tabbed on the right, and raise it.

    Returns ``(widget, problem)``: ``problem`` is ``""``, or says why the widget could not
    be docked (a headless viewer model has no window; the widget is still returned).
    """
    from napari_invert.widgets._matrix_dock import SimilarityMatrixWidget
    from napari_invert.widgets._workers import describe_error

    widget = SimilarityMatrixWidget(viewer)
    try:
        dock = viewer.window.add_dock_widget(widget, name="Similarity matrix", area="right", tabify=True)
        dock.raise_()
    except Exception as exc:  # no window (headless viewer model): keep the widget only
        return widget, f"Cannot dock the similarity matrix: {describe_error(exc)}"
    return widget, ""
