"""The audit's victims for the evaluation: the user's model and its untrained control.

A study's evaluation loads each fold's victim from its segmenter checkpoint; an audit
folder has none (the user's network stays where the user keeps it). :func:`audit_victim`
rebuilds it from the folder's ``audit.yaml`` (architecture ``user``: the model source;
``user@untrained``: the same architecture at its initialisation, seeded with
``controls.seed`` exactly as the audit's control), so the Dice section (does the victim
segment; does it segment the reconstructions?) and its "barely segments" banner are the
study's own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ARCH = "user"
CONTROL_ARCH = "user@untrained"


def is_audit(root: str | Path) -> bool:
    """True for a folder written by ``napari-invert audit``."""
    return (Path(root) / "audit.yaml").is_file() and (Path(root) / "audit.json").is_file()


def audit_victim(root: str | Path, arch: str, device: Any = "cpu") -> tuple[Any, dict[str, Any]] | None:
    """``(model adapter, meta)`` of ``arch`` in the audit folder ``root``, or ``None`` (not
    an audit, another architecture, or the model cannot be read / rebuilt now).

    The adapter has ``segment(image) -> labels`` and ``volume_logits``; ``meta`` holds
    ``n_classes`` (the network's output channels)."""
    if arch not in (ARCH, CONTROL_ARCH) or not is_audit(root):
        return None
    from napari_invert.audit_config import load_audit_config
    from napari_invert.errors import NapariInvertError
    from napari_invert.models.sources import load_model_source

    try:
        config = load_audit_config(Path(root) / "audit.yaml")
        adapter = load_model_source(config.model)
        adapter.to(device)
        if arch == CONTROL_ARCH:
            adapter, reason = adapter.untrained(config.controls.seed)
            if adapter is None:
                log.warning("audit: no untrained control to segment with (%s)", reason)
                return None
    except (NapariInvertError, OSError) as exc:
        log.warning("audit: the user's model cannot be read for the evaluation (%s)", exc)
        return None
    n_labels = _cohort_classes(Path(root))
    if n_labels is not None and adapter.out_channels is not None and adapter.out_channels < n_labels:
        log.warning(
            "audit: the model outputs %s channels but the cohort has %s classes: no Dice",
            adapter.out_channels,
            n_labels,
        )
        return None
    return adapter, {"n_classes": adapter.out_channels, "arch": arch, "source": "audit.yaml"}


def _cohort_classes(root: Path) -> int | None:
    from napari_invert._io import read_json

    try:
        n = read_json(root / "cohort.json").get("n_classes")
    except Exception:  # a missing / broken cohort.json is reported by the evaluation itself
        return None
    return int(n) if isinstance(n, int) else None
