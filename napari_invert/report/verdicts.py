"""One human sentence per experiment: how many private subjects were re-identified.

Every sentence names its metric, its chance level (1/candidates: 1/N when all candidates
were scored, 1/(k+1) for a sampled deformation) and its control (the attacker's prior).
Threat model: feature inversion (the attacker reads the encoder's outputs for a
patient's scan).
"""

from __future__ import annotations

import numpy as np

from napari_invert.report.summary import ExperimentEvaluation
from napari_invert.report.tables import gain_of, metric_label
from napari_invert.threat_models import ARCH_NAMES, FEATURE_INVERSION


def verdicts(evaluations: list[ExperimentEvaluation], preferred: str) -> list[str]:
    """One sentence per experiment, by the ``preferred`` metric (else the first computed)."""
    out = []
    for ev in evaluations:
        metric = preferred if preferred in ev.identification else next(iter(ev.identification), None)
        if metric is None:
            continue
        d = ev.identification[metric]
        true = ev.true_values(metric)
        prior = ev.prior_values[metric]
        gain = np.array([gain_of(metric, a, b) for a, b in zip(true, prior)])
        arch = ARCH_NAMES.get(ev.experiment.arch, ev.experiment.arch)
        text = (
            f"[{FEATURE_INVERSION}] {arch} {ev.experiment.tap} ({ev.experiment.variant}): "
            f"{d['top1']}/{d['n_queries']} private "
            f"subjects re-identified at top-1 by {metric_label(metric)} "
            f"(chance 1/{d['candidates_per_row']}, p = {d['p_value_top1']:.2g}); mean rank "
            f"{d['mean_rank']:.2f}; {metric_label(metric)} {np.nanmean(true):.2f} vs prior "
            f"{np.nanmean(prior):.2f} (gain {np.nanmean(gain):+.2f})."
        )
        best = max(
            ev.identification,
            key=lambda m: ev.identification[m]["top1"] / max(ev.identification[m]["n_queries"], 1),
        )
        if ev.identification[best]["top1"] > d["top1"]:
            b = ev.identification[best]
            text += (
                f" Best metric: {metric_label(best)}, {b['top1']}/{b['n_queries']} at top-1 "
                f"(chance 1/{b['candidates_per_row']})."
            )
        out.append(text)
    return out
