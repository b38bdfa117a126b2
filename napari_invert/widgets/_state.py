"""What the widgets of one viewer share: the opened study (or cohort + segmenter).

The Study widget publishes, the Attack and Compare widgets listen::

    state = session_for(viewer)
    state.study_changed.connect(self._on_study)   # psygnal keeps a weak ref to methods
    state.set_study(StudyResults(path))

The registry is a :class:`weakref.WeakKeyDictionary` keyed by the viewer, so it never
keeps a closed viewer (or its Qt window) alive.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import Signal

from napari_invert.config import StudyConfig, load_config
from napari_invert.errors import DataError, NapariInvertError
from napari_invert.study.results import StudyResults


@dataclass(frozen=True)
class CohortSession:
    """A cohort folder plus a trained segmenter checkpoint, outside any study folder.

    ``segmenter_stem``: checkpoint path without suffix (``.safetensors`` + ``.json``).
    """

    cohort_path: Path
    segmenter_stem: Path


class SessionState:
    """The study (or cohort session) currently opened in one viewer."""

    study_changed = Signal(object)  # StudyResults | None
    cohort_changed = Signal(object)  # CohortSession | None

    def __init__(self) -> None:
        self.study: StudyResults | None = None
        self.config: StudyConfig | None = None
        self.cohort: CohortSession | None = None

    def set_study(self, study: StudyResults | None, config: StudyConfig | None = None) -> None:
        """Publish ``study`` (and its parsed config) to every listening widget."""
        self.study = study
        self.config = config
        self.study_changed.emit(study)

    def set_cohort(self, cohort: CohortSession | None) -> None:
        self.cohort = cohort
        self.cohort_changed.emit(cohort)


_SESSIONS: weakref.WeakKeyDictionary[Any, SessionState] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> SessionState:
    """The :class:`SessionState` of ``viewer`` (created on first use)."""
    state = _SESSIONS.get(viewer)
    if state is None:
        state = SessionState()
        _SESSIONS[viewer] = state
    return state


def open_study(path: str | Path) -> tuple[StudyResults, StudyConfig | None]:
    """Open and sanity-check a study folder; every problem is a :class:`NapariInvertError`.

    Reads ``cohort.json`` and ``splits.json`` eagerly (so a broken file is reported now,
    not later in a worker) and parses ``config.yaml`` (``None`` if it does not validate:
    the results can still be browsed, with the defaults of the widgets).
    """
    path = Path(str(path)).expanduser()
    if not str(path) or not path.exists():
        raise DataError(path, "folder not found")
    if not path.is_dir():
        raise DataError(path, "not a folder (choose a study folder)")
    results = StudyResults(path)
    cohort = results.cohort
    splits = results.splits
    if not isinstance(cohort, dict) or not cohort.get("subject_ids"):
        raise DataError(results.folder.cohort_path, "no subject_ids")
    if not cohort.get("variants"):
        raise DataError(results.folder.cohort_path, "no variants")
    if not isinstance(splits, dict) or not isinstance(splits.get("folds"), list):
        raise DataError(results.folder.splits_path, "no folds")
    try:
        config: StudyConfig | None = load_config(results.folder.config_path)
    except NapariInvertError:
        config = None
    return results, config
