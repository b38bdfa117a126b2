"""Reconstructions made by a decoder trained in the napari plugin (not the study's own).

The Attack widget saves such a decoder, its curve and its reconstructions under
``StudyFolder.plugin_dir(variant, fold, arch, tap)`` (``<tap>/plugin/``), never over the
study's ``decoder``/``decoder_curve.csv``/``recon/``: the study stays consistent with its
``evaluation/`` (metrics.csv and matrices describe the study's reconstructions only).

:class:`PluginExperiment` marks such an experiment everywhere in the widgets: it never
compares equal to the study's :class:`Experiment`, so the study's scores are never looked
up for it, and its label says where it comes from. Pure Python + NumPy (no Qt).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_invert.errors import DataError
from napari_invert.study.layout import tap_from_slug
from napari_invert.study.results import Experiment, StudyResults, _read_array

PLUGIN_NOTE = "plugin decoder"


@dataclass(frozen=True, order=True)
class PluginExperiment(Experiment):
    """An experiment whose decoder was trained in the plugin (``<tap>/plugin/``)."""

    @property
    def label(self) -> str:
        return super().label.replace(f"({self.variant})", f"({PLUGIN_NOTE}, {self.variant})")

    @property
    def study_experiment(self) -> Experiment:
        """The study's experiment with the same variant, architecture and tap."""
        return Experiment(self.variant, self.arch, self.tap)


def is_plugin(experiment: Experiment) -> bool:
    return isinstance(experiment, PluginExperiment)


def plugin_experiments(results: StudyResults) -> list[PluginExperiment]:
    """Every (variant, arch, tap) with at least one plugin reconstruction on disk, sorted."""
    found: set[PluginExperiment] = set()
    for variant in results.variants:
        for fold_dir in sorted((results.root / variant).glob("fold*")):
            for recon_dir in fold_dir.glob("*/*/plugin/recon"):
                if any(recon_dir.glob("*.nii.gz")):
                    arch, tap = recon_dir.parent.parent.parent.name, recon_dir.parent.parent.name
                    found.add(PluginExperiment(variant, arch, tap_from_slug(tap)))
    return sorted(found)


def recon_path(results: StudyResults, experiment: Experiment, subject_id: str) -> Path:
    """Where the reconstruction of ``subject_id`` (from its private fold) lies."""
    if not is_plugin(experiment):
        return results.recon_path(experiment, subject_id)
    fold = results.fold_of(subject_id)
    return results.folder.plugin_recon(experiment.variant, fold, experiment.arch, experiment.tap, subject_id)


def has_recon(results: StudyResults, experiment: Experiment, subject_id: str) -> bool:
    try:
        return recon_path(results, experiment, subject_id).is_file()
    except KeyError:  # private in no fold
        return False


def read_recon(results: StudyResults, experiment: Experiment, subject_id: str) -> np.ndarray:
    """The reconstruction as float32 ``(X, Y, Z)``; a missing file is a :class:`DataError`."""
    path = recon_path(results, experiment, subject_id)
    if not path.is_file():
        raise DataError(path, "file not found")
    return _read_array(path, np.float32)


def all_experiments(results: StudyResults) -> list[Experiment]:
    """The study's experiments, then the plugin's."""
    return [*results.experiments(), *plugin_experiments(results)]
