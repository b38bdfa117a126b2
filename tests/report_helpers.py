"""Helpers shared by the report test modules (``tests/test_report_*.py``).

Real computation throughout (no mocks of the metrics): the synthetic studies of
:mod:`study_fixtures` have known answers (perfect reconstructions, reconstructions equal to
the prior, blurred + noisy reconstructions that are re-identifiable). The evaluated study
those modules share is the ``report_study`` fixture of ``conftest.py``
(built once per test session by :func:`make_report_study`).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study_fixtures import make_synthetic_study

#: The shared evaluated study: 8 subjects, three experiments of decreasing quality.
N_SUBJECTS = 8
EXPERIMENTS = {
    ("unet", "bottleneck+skips"): (0.6, 0.03),
    ("unet", "bottleneck"): (2.0, 0.45),  # hard: not every subject is re-identified
    ("segnet", "bottleneck+indices"): (1.0, 0.06),
}
SIM_METRICS = ("correlation", "ssim", "ssim_global")
#: The grid of the tiny per-test studies (voxels).
TINY_SHAPE = (16, 16, 16)


def make_report_study(root: Path) -> tuple[Path, Any]:
    """Write the shared study into ``root`` and evaluate it: ``(root, EvaluationSummary)``."""
    from napari_invert.report import evaluate_study

    root = make_synthetic_study(root, N_SUBJECTS, experiments=EXPERIMENTS)
    return root, evaluate_study(root, progress=False)


def tiny_study(
    tmp_path: Path,
    experiments: Mapping[tuple[str, str], tuple[float, float] | str],
    n_subjects: int = 6,
    **options: Any,
) -> Path:
    """A synthetic study ``tmp_path / "s"`` on the 16^3 grid, without training curves.

    ``experiments`` maps ``(arch, tap)`` to ``(blur sigma, noise SD)`` (or ``"prior"``);
    ``options`` go to :func:`study_fixtures.make_synthetic_study` (e.g. ``with_segmenters``).
    """
    return make_synthetic_study(
        tmp_path / "s",
        n_subjects=n_subjects,
        shape=TINY_SHAPE,
        with_curves=False,
        experiments=experiments,
        **options,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def temp_leftovers(directory: Path) -> list[Path]:
    """Files an interrupted atomic write would leave (``.<name>.<random><suffix>``)."""
    return [p for p in directory.rglob(".*") if p.is_file()]
