"""Evaluate a study folder and report it: metrics.csv, Tables 1-3, figures, report.html.

Entry point: :func:`evaluate_study`. The paper's published numbers are in
:mod:`napari_invert.report.paper`; tables in :mod:`~napari_invert.report.tables`, figures
in :mod:`~napari_invert.report.figures`, the HTML page in :mod:`~napari_invert.report.html`.
"""

from napari_invert.report.evaluate import EvaluationSummary, ExperimentEvaluation, evaluate_study
from napari_invert.report.tables import MetricRow, read_metrics_csv

__all__ = ["EvaluationSummary", "ExperimentEvaluation", "MetricRow", "evaluate_study", "read_metrics_csv"]
