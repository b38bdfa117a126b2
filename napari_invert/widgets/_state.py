"""What the widgets of one viewer share: the opened study (or cohort + segmenter).

The Study widget publishes, the Attack and Compare widgets listen::

    state = session_for(viewer)
    state.study_changed.connect(self._on_study)   # psygnal keeps a weak ref to methods
    state.set_study(StudyResults(path))

Widgets never import each other: they talk only through this state. The similarity
matrix asks for a pair with :meth:`SessionState.request_pair`; Compare announces the
subject it shows with :meth:`SessionState.show_subject`; the Attack widget announces new
plugin-made reconstructions with :meth:`SessionState.announce_plugin_results`.

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
from napari_invert.study.results import Experiment, StudyResults


@dataclass(frozen=True)
class CohortSession:
    """A cohort folder plus a trained segmenter checkpoint, outside any study folder.

    ``segmenter_stem``: checkpoint path without suffix (``.safetensors`` + ``.json``).
    """

    cohort_path: Path
    segmenter_stem: Path


@dataclass(frozen=True)
class PairRequest:
    """Show the reconstruction of ``recon_subject`` next to the original of ``candidate``.

    ``values``: numbers to show beside the pair (metric label -> value).
    """

    experiment: Experiment
    recon_subject: str
    candidate: str
    values: dict[str, float]


class SessionState:
    """The study (or cohort session) currently opened in one viewer, and what it shows."""

    study_changed = Signal(object)  # StudyResults | None
    cohort_changed = Signal(object)  # CohortSession | None
    pair_requested = Signal(object)  # PairRequest (matrix dock -> Compare)
    subject_shown = Signal(object)  # subject id (str) or None (Compare -> matrix dock)
    variant_shown = Signal(str)  # variant shown by Compare (-> matrix dock)
    plugin_results_changed = Signal(object)  # Experiment made in the plugin (Attack -> Compare)
    audit_model_changed = Signal(object)  # _audit_source.AuditModel | None (Study -> Attack)

    def __init__(self) -> None:
        self.study: StudyResults | None = None
        self.config: StudyConfig | None = None
        self.cohort: CohortSession | None = None
        self.audit_model: Any = None  # the user's own segmenter + chosen tap (Study widget)
        self.audit_tap: str | None = None
        self.subject: str | None = None
        self.variant: str | None = None
        self.compare_docked = False  # a Compare widget listens (set by Compare itself)
        self.launched_docks: tuple[Any, Any] | None = None  # (Study, Compare) made by the launcher

    def request_pair(self, request: PairRequest) -> None:
        self.pair_requested.emit(request)

    def show_subject(self, subject: str | None) -> None:
        self.subject = subject
        self.subject_shown.emit(subject)

    def show_variant(self, variant: str) -> None:
        self.variant = variant
        self.variant_shown.emit(variant)

    def announce_plugin_results(self, experiment: Experiment) -> None:
        self.plugin_results_changed.emit(experiment)

    def set_study(self, study: StudyResults | None, config: StudyConfig | None = None) -> None:
        """Publish ``study`` (and its parsed config) to every listening widget."""
        self.study = study
        self.config = config
        self.study_changed.emit(study)

    def set_cohort(self, cohort: CohortSession | None) -> None:
        self.cohort = cohort
        self.cohort_changed.emit(cohort)

    def set_audit_model(self, model: Any, tap: str | None = None) -> None:
        """Publish the user's own segmenter (an ``AuditModel``: adapter, discovered taps,
        default attack subjects) and the chosen tap entry."""
        self.audit_model = model
        self.audit_tap = tap
        self.audit_model_changed.emit(model)


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
