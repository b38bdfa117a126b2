"""Evaluate a study folder and report it: metrics.csv, Tables 1-3, figures, report.html.

Entry point: :func:`evaluate_study` (:mod:`~napari_invert.report.evaluate`). One module per
concern: similarity matrices and ranks (:mod:`~napari_invert.report.matrices`),
deformation (:mod:`~napari_invert.report.deformation`), Dice and its trivial baseline
(:mod:`~napari_invert.report.dice`), native-grid scores (:mod:`~napari_invert.report.native`),
verdicts (:mod:`~napari_invert.report.verdicts`), Tables 1-3
(:mod:`~napari_invert.report.tables`), figures (:mod:`~napari_invert.report.figures`) and
the HTML page, assembled from section builders (:mod:`~napari_invert.report.html`; adding
a section = a module + one line there). The paper's published numbers are in
:mod:`~napari_invert.report.paper`.
"""

from napari_invert.report.evaluate import EvaluationSummary, ExperimentEvaluation, evaluate_study
from napari_invert.report.tables import MetricRow, read_metrics_csv

__all__ = ["EvaluationSummary", "ExperimentEvaluation", "MetricRow", "evaluate_study", "read_metrics_csv"]
