"""Defences against the two threats the audit measures, and what they cost.

* :mod:`~napari_invert.defences.spec` — one defence at one strength (:class:`DefenceSpec`);
* :mod:`~napari_invert.defences.perturb` — feature noise and quantisation at inference
  (:class:`DefendedSegmenter`);
* :mod:`~napari_invert.defences.taps` — the attacker's view of a defended victim
  (:class:`ExposedTapper`);
* :mod:`~napari_invert.defences.dcor` — distance correlation and the NoPeek penalty;
* :mod:`~napari_invert.defences.training` — training a defended victim (all kinds);
* :mod:`~napari_invert.defences.dp` — DP-SGD with Opacus (optional extra ``dp``);
* :mod:`~napari_invert.defences.measures` — utility and privacy of one defended victim;
* :mod:`~napari_invert.defences.frontier` — points, intervals, Pareto front, table, figure.

The experiment runner is :mod:`napari_invert.study.defended`.
"""

from napari_invert.defences.dcor import distance_correlation, nopeek_penalty
from napari_invert.defences.perturb import DefendedSegmenter, FeatureNoise, FeatureQuantiser
from napari_invert.defences.spec import KINDS, REFERENCE, DefenceSpec, expand_defences
from napari_invert.defences.taps import ExposedTapper, exposed_names

__all__ = [
    "KINDS",
    "REFERENCE",
    "DefenceSpec",
    "DefendedSegmenter",
    "ExposedTapper",
    "FeatureNoise",
    "FeatureQuantiser",
    "distance_correlation",
    "expand_defences",
    "exposed_names",
    "nopeek_penalty",
]
