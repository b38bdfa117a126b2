"""The ``result.json`` of one defended experiment: its format version and a reader that checks it.

One file per (variant, fold, arch, defence), written by :mod:`napari_invert.study.defended`
and pooled by :mod:`napari_invert.defences.frontier`. A file from another format version, or
one missing a block the frontier reads, is refused with :class:`~napari_invert.errors.DataError`
naming the file; the runner measures such an experiment again (its trained victim and decoder
are reused from their checkpoints), so an old study folder is brought up to date by rerunning
``napari-invert defend``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_invert._io import read_json
from napari_invert.errors import DataError

__all__ = ["REQUIRED_KEYS", "RESULT_FORMAT_VERSION", "read_result"]

#: Version of the ``result.json`` layout. Files written before the key existed are version 1.
RESULT_FORMAT_VERSION = 1

#: Top-level blocks every reader of a result relies on.
REQUIRED_KEYS = (
    "variant",
    "fold",
    "arch",
    "defence",
    "utility",
    "feature_inversion",
    "training_data_leakage",
)


def read_result(path: str | Path) -> dict[str, Any]:
    """The ``result.json`` at ``path``, checked.

    Raises :class:`DataError` (path, problem) when the file is not valid JSON, is from another
    format version, or lacks one of :data:`REQUIRED_KEYS`.
    """
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise DataError(path, "not a defended-experiment result (expected a JSON object)")
    version = doc.get("format_version", 1)
    if version != RESULT_FORMAT_VERSION:
        raise DataError(
            path,
            f"result format version {version!r}, this napari-invert reads {RESULT_FORMAT_VERSION}; "
            "rerun `napari-invert defend` on the study to measure it again (trained networks are reused)",
        )
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        raise DataError(path, f"incomplete defended-experiment result: no {', '.join(missing)}")
    return doc
