"""Render docs/screenshot.png: the Compare widget on a study, in napari's grid mode.

Usage (needs a display; on a headless machine run it under Xvfb)::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/render_screenshot.py [STUDY] \
        [--out docs/screenshot.png] [--subject S02] [--overlay ssim] [--ndisplay 2]

Without ``STUDY`` a small synthetic study is built in a temporary folder with the same
helper as the GUI tests (``tests/gui_helpers.make_gui_study``, fake evaluation included).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _wait(app, condition, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    """Process Qt events until ``condition()`` holds (workers deliver results via events)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the widgets did not finish loading in time")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(10):
        app.processEvents()
        time.sleep(0.02)


def _dismiss_notifications(viewer) -> None:  # type: ignore[no-untyped-def]
    """Close napari's toast notifications before the shot."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
    except (ImportError, AttributeError):  # private API: best effort only
        pass


def _show_compare_tab(viewer) -> None:  # type: ignore[no-untyped-def]
    """The matrix dock is tabbed with Compare: bring the Compare tab to the front."""
    with contextlib.suppress(AttributeError, KeyError):  # private API: best effort only
        viewer.window.dock_widgets["Compare"].parent().raise_()


def build_demo_study(root: Path) -> Path:
    """The synthetic study of the GUI tests, a little larger so the picture is readable."""
    sys.path.insert(0, str(REPO / "tests"))
    from gui_helpers import make_gui_study

    return make_gui_study(root, n_subjects=6, n_folds=2, evaluated=True, shape=(48, 56, 48))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", nargs="?", type=Path, help="study folder (default: build a synthetic one)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot.png")
    parser.add_argument("--subject", help="subject id to show (default: the second subject)")
    parser.add_argument("--overlay", choices=["none", "ssim", "diff", "deformation"], default="diff")
    parser.add_argument("--ndisplay", type=int, choices=[2, 3], default=2)
    parser.add_argument("--size", default="1700x1000", help="window size WIDTHxHEIGHT")
    parser.add_argument("--no-matrix", action="store_true", help="do not open the similarity-matrix dock")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_invert.widgets._compare_widget import CompareWidget
    from napari_invert.widgets._study_widget import StudyWidget

    with tempfile.TemporaryDirectory(prefix="napari-invert-shot-") as tmp:
        study = args.study if args.study is not None else build_demo_study(Path(tmp) / "synthetic_study")
        viewer = napari.Viewer(show=True, title="napari-invert")
        app = QApplication.instance()
        width, height = (int(v) for v in args.size.lower().split("x"))
        viewer.window.resize(width, height)
        study_widget = StudyWidget(viewer)
        compare = CompareWidget(viewer)
        viewer.window.add_dock_widget(study_widget, name="Study", area="left")
        viewer.window.add_dock_widget(compare, name="Compare", area="right")
        if study_widget.open(study) is None:
            print(f"cannot open {study}", file=sys.stderr)
            return 1
        _wait(app, lambda: not compare.busy and compare.current_view is not None)
        ids = compare.study.subject_ids
        index = ids.index(args.subject) if args.subject else min(1, len(ids) - 1)
        compare.set_subject(index)
        _wait(app, lambda: not compare.busy and compare.current_view.ref_subject == ids[index])
        if args.overlay != "none":
            compare.set_overlay(args.overlay, True)
            _wait(app, lambda: not compare.busy)
        if not args.no_matrix:
            dock = compare.show_matrix()
            _wait(app, lambda: dock is None or (not dock.busy and dock.similarity is not None))
            if dock is not None and dock.similarity is not None and ids[index] in dock.similarity.rows:
                dock.highlight_subject(ids[index])
            _show_compare_tab(viewer)
        viewer.dims.ndisplay = args.ndisplay
        viewer.reset_view()
        _dismiss_notifications(viewer)
        _wait(app, lambda: True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(args.out), canvas_only=False, flash=False)
        viewer.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
