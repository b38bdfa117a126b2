"""The Compare widget's metrics table: which numbers belong to which grid cell, and from where.

A reconstruction made by a decoder trained in the plugin is never given the study's
scores (``evaluation/metrics.csv`` describes the study's own reconstructions): its
column is computed on demand and its header says "plugin decoder".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem

from napari_invert.threat_models import CONTROL_LABEL, FEATURE_INVERSION, ArchKey, arch_title
from napari_invert.widgets._core_api import SubjectView
from napari_invert.widgets._grid import short_labels
from napari_invert.widgets._plugin_results import is_plugin
from napari_invert.widgets._study_data import MetricsTable, MetricValue, sort_metrics

ON_DEMAND = "computed on demand"
STORED = "evaluation/metrics.csv"


@dataclass
class ScoreColumn:
    """One column of the table: a cell's label, where its numbers come from, the numbers."""

    label: str
    source: str
    values: dict[str, MetricValue]
    control: bool = False  # the untrained-victim control (``<arch>@untrained``)


def needs_scores(view_cells: Sequence[object], table: MetricsTable | None) -> list[bool]:
    """Per cell: must its scores be computed on demand (no stored row can describe it)?"""
    return [table is None or is_plugin(cell.experiment) for cell in view_cells]  # type: ignore[attr-defined]


def subject_columns(view: SubjectView, table: MetricsTable | None) -> list[ScoreColumn]:
    """The columns of the subject view: stored scores where they describe the cell."""
    columns = []
    for i, cell in enumerate(view.cells):
        control = ArchKey.parse(cell.experiment.arch).is_control
        if table is not None and not is_plugin(cell.experiment):
            values = table.lookup(view.ref_subject, cell.experiment)
            columns.append(ScoreColumn(cell.experiment.label, STORED, values, control))
        else:
            scores = view.scores[i] if i < len(view.scores) else {}
            values = {k: MetricValue(v) for k, v in scores.items()}
            columns.append(ScoreColumn(cell.experiment.label, ON_DEMAND, values, control))
    return columns


def title_for(subject: str, columns: Sequence[ScoreColumn]) -> str:
    """The table's title, naming every source of its numbers."""
    groups: dict[str, list[str]] = {}
    for column in columns:
        groups.setdefault(column.source, []).append(column.label)

    def phrase(source: str) -> str:
        return source if source == ON_DEMAND else f"from {source}"

    if len(groups) <= 1:
        sources = phrase(next(iter(groups), ON_DEMAND))
    else:
        sources = "; ".join(
            f"{phrase(s)} for {', '.join(short_labels(labels))}" for s, labels in groups.items()
        )
    text = f"{subject} — {FEATURE_INVERSION}: metrics {sources}"
    if any(c.source == STORED for c in columns):
        text += " (#n: re-identification rank)"
    return text


def fill_table(table: QTableWidget, columns: Sequence[ScoreColumn]) -> None:
    """Metrics as rows, one column per grid cell; the full label in each header's tooltip."""
    metrics = sort_metrics({m for c in columns for m in c.values})
    short = short_labels([c.label for c in columns])
    table.clear()
    table.setRowCount(len(metrics))
    table.setColumnCount(len(columns))
    table.setVerticalHeaderLabels(metrics)
    for col, (column, name) in enumerate(zip(columns, short)):
        if is_plugin_label(column.label) and "plugin" not in name:
            name += " (plugin)"
        if column.control:  # "SegNet — untrained victim (control)[, tap]", never "segnet@untrained"
            arch, _, rest = name.partition(" ")
            name = arch_title(arch) + (f", {rest}" if rest else "")
        header = QTableWidgetItem(name)
        role = f"{CONTROL_LABEL}, " if column.control else ""
        header.setToolTip(f"{column.label} ({role}{FEATURE_INVERSION}): {column.source}")
        header.setData(Qt.UserRole, column.label)
        table.setHorizontalHeaderItem(col, header)
        for row, metric in enumerate(metrics):
            value = column.values.get(metric)
            table.setItem(row, col, QTableWidgetItem(value.text() if value is not None else "–"))
    height = table.horizontalHeader().height() + sum(table.rowHeight(r) for r in range(len(metrics)))
    scroll = table.horizontalScrollBar().sizeHint().height()  # room for it when the columns overflow
    table.setFixedHeight(height + 2 * table.frameWidth() + 2 + scroll)


def is_plugin_label(label: str) -> bool:
    return "plugin decoder" in label


def table_text(table: QTableWidget) -> dict[str, dict[str, str]]:
    """The table as ``{experiment label: {metric: text}}`` (for tests and scripts)."""
    out: dict[str, dict[str, str]] = {}
    for c in range(table.columnCount()):
        label = table.horizontalHeaderItem(c).data(Qt.UserRole)
        out[label] = {
            table.verticalHeaderItem(r).text(): table.item(r, c).text() for r in range(table.rowCount())
        }
    return out


def pair_title(recon_subject: str, candidate: str) -> str:
    """Title of a similarity-matrix pair's scores (feature inversion)."""
    return f"Reconstruction of {recon_subject} vs original of {candidate} — {FEATURE_INVERSION}"


def pair_column(experiment: object, values: dict[str, float]) -> ScoreColumn:
    """The one column of a similarity-matrix pair (its scores come from the stored matrix)."""
    control = ArchKey.parse(experiment.arch).is_control  # type: ignore[attr-defined]
    scored = {k: MetricValue(v) for k, v in values.items()}
    return ScoreColumn(experiment.label, "similarity matrix", scored, control)  # type: ignore[attr-defined]
