"""Compare's list of reconstructions: one checkable item per experiment, with a human label.

An item's text names the victim as a person reads it (``SegNet — untrained victim
(control), bottleneck+indices (skull_stripped)``), never the architecture directory
(``segnet@untrained``); the item carries its :class:`~napari_invert.study.results.Experiment`
(``Qt.UserRole``), so selections never depend on the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from napari_invert.study.results import Experiment
from napari_invert.threat_models import ArchKey
from napari_invert.widgets._qt_util import blocked


def recon_label(experiment: Experiment) -> str:
    """The list label of an experiment's reconstructions.

    A trained victim keeps its usual label (``U-Net bottleneck+skips (skull_stripped)``); a
    victim under a condition is named by :attr:`ArchKey.title`, then its tap and variant:
    ``SegNet — untrained victim (control), bottleneck+indices (skull_stripped)``. A plugin
    decoder's note stays in the parentheses.
    """
    key = ArchKey.parse(experiment.arch)
    label = experiment.label  # "<arch> <tap> (<variant>)"; taps contain no space
    if key.condition is None:
        return label
    _, _, rest = label.partition(" ")
    return f"{key.title}, {rest}"


def ticked_experiments(items: QListWidget) -> list[Experiment]:
    """The ticked experiments, in list order (= grid order)."""
    out = []
    for i in range(items.count()):
        item = items.item(i)
        if item.checkState() == Qt.Checked:
            out.append(item.data(Qt.UserRole))
    return out


def fill_recon_list(
    items: QListWidget,
    experiments: Sequence[Experiment],
    ticked: Iterable[Experiment],
    tick: Experiment | None = None,
) -> None:
    """Replace the list's items by ``experiments`` (signals blocked).

    What was ``ticked`` stays ticked (plus ``tick``, a newly made experiment) when any of it
    is still listed; otherwise every experiment is ticked.
    """
    ticked = set(ticked)
    keep = bool(ticked) and any(e in ticked for e in experiments)
    with blocked(items):
        items.clear()
        for exp in experiments:
            item = QListWidgetItem(recon_label(exp))
            item.setData(Qt.UserRole, exp)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            on = (exp in ticked or exp == tick) if keep else True
            item.setCheckState(Qt.Checked if on else Qt.Unchecked)
            items.addItem(item)
