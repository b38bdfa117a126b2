"""Convergence of a study's networks: one table for the CLI, the report and the plugin.

Every trainer writes a convergence record (JSON) beside its curve
(:meth:`StudyFolder.segmenter_convergence` / :meth:`StudyFolder.decoder_convergence`,
format: :func:`napari_invert.models.training.convergence_record`).

* :func:`summarise_convergence` reads them all into flat rows;
* :func:`victim_segmentation_check` is THE check of "do the victims segment?": the
  report banner, the CLI and the plugin call it and show its ``message`` when
  ``ok`` is False;
* :func:`format_convergence_table` / :func:`format_victim_check` render them as text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from napari_invert._io import read_json
from napari_invert.models.validation import VERDICT_IMPLICATIONS
from napari_invert.study.layout import StudyFolder, tap_from_slug

__all__ = [
    "format_convergence_table",
    "format_victim_check",
    "summarise_convergence",
    "victim_segmentation_check",
]


def _where(folder: StudyFolder, path: Path) -> dict[str, Any]:
    parts = path.relative_to(folder.root).parts
    out: dict[str, Any] = {"variant": parts[0], "fold": int(parts[1].removeprefix("fold")), "arch": parts[2]}
    out["tap"] = tap_from_slug(parts[3]) if len(parts) == 5 else None
    return out


def summarise_convergence(folder: str | Path | StudyFolder) -> list[dict[str, Any]]:
    """One row per convergence record in the study folder (victims first, then decoders).

    Row keys: ``network`` (``victim`` / ``decoder``), ``variant``, ``fold``, ``arch``,
    ``tap`` (decoders), ``status`` (``running`` / ``finished`` / ``cancelled``),
    ``stop_reason`` (``plateau`` / ``max_steps`` / ``cancelled``), ``steps_run``,
    ``max_steps``, ``best_step``, ``metric`` (``dice``: higher is better; ``mse``: lower),
    ``best_score``, ``baseline_score``, ``baseline``, ``validation_source``
    (``held_out`` / ``training`` / ``none``), ``segments`` (victims: bool or None when not
    judged), ``segments_reason``, ``seconds``, ``path``. Unreadable records give a row with
    ``status = "unreadable"`` and the problem in ``segments_reason``.
    """
    folder = folder if isinstance(folder, StudyFolder) else StudyFolder(Path(folder))
    rows: list[dict[str, Any]] = []
    for path in folder.convergence_records():
        where = _where(folder, path)
        network = "victim" if path.name.startswith("segmenter") else "decoder"
        try:
            rec = read_json(path)
        except Exception as exc:  # a broken record must not hide the others
            rows.append(
                {
                    "network": network,
                    **where,
                    "status": "unreadable",
                    "segments_reason": str(exc),
                    "path": str(path),
                }
            )
            continue
        rows.append(
            {
                "network": network,
                **where,
                "status": rec.get("status"),
                "stop_reason": rec.get("stop_reason"),
                "steps_run": rec.get("steps_run"),
                "max_steps": rec.get("max_steps"),
                "best_step": rec.get("best_step"),
                "metric": rec.get("metric"),
                "best_score": rec.get("best_score"),
                "baseline_score": rec.get("baseline_score"),
                "baseline": rec.get("baseline"),
                "validation_source": rec.get("validation_source"),
                "n_validation": len(rec.get("validated_on") or []),
                "segments": rec.get("segments") if network == "victim" else None,
                "segments_reason": rec.get("segments_reason", ""),
                "seconds": rec.get("seconds"),
                "path": str(path),
            }
        )
    return rows


def victim_segmentation_check(folder: str | Path | StudyFolder) -> dict[str, Any]:
    """Do the study's victims segment? (The one check behind every warning.)

    Returns ``{"ok": bool, "n_victims": int, "failing": [rows], "unjudged": [rows],
    "message": str}``: ``failing`` are victims whose record says ``segments: false``
    (best validation Dice below ``min_validation_dice`` or not ``min_dice_gain`` above the
    majority-label baseline); ``unjudged`` have no verdict (validation off, or training
    not finished). ``message`` is empty when ``ok``; otherwise a multi-line warning that
    names each failing victim, its Dice and baseline, and which conclusions still hold.
    """
    rows = [r for r in summarise_convergence(folder) if r["network"] == "victim"]
    failing = [r for r in rows if r.get("segments") is False]
    unjudged = [r for r in rows if r.get("segments") is None]
    lines: list[str] = []
    if failing:
        lines.append(
            f"WARNING: {len(failing)} of {len(rows)} victim segmenters do not segment "
            "(validation Dice too low or not clearly above the majority-label baseline):"
        )
        for r in failing:
            judged_on = _judged_on(r)
            lines.append(
                f"  - {r['variant']} fold {r['fold']} {r['arch']}: best Dice {_num(r['best_score'])} "
                f"vs baseline {_num(r['baseline_score'])}{judged_on} (stopped: {r['stop_reason']} "
                f"after {r['steps_run']} steps)"
            )
        lines.append("  " + VERDICT_IMPLICATIONS)
        if any(_judged_on(r) and r["n_validation"] <= 2 for r in failing):
            lines.append(
                "  A verdict on one or two held-out subjects is noisy (the same settings with another "
                "seed can pass): the report's Dice section scores each victim on the fold's unseen "
                "subjects against the same kind of baseline."
            )
        lines.append(
            "  Try more steps (segmenter_training.steps), a different lr, or check the labels; "
            "`napari-invert study-info STUDY` shows every curve's summary."
        )
    return {
        "ok": not failing,
        "n_victims": len(rows),
        "failing": failing,
        "unjudged": unjudged,
        "message": "\n".join(lines),
    }


def _judged_on(row: dict[str, Any]) -> str:
    """`` on N held-out subject(s)`` for a victim validated on held-out subjects, else ``""``."""
    n = row.get("n_validation") or 0
    if row.get("validation_source") != "held_out" or n < 1:
        return ""
    return f" on {n} held-out subject{'s' if n > 1 else ''}"


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_convergence_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of :func:`summarise_convergence` rows."""
    header = [
        "network",
        "variant",
        "fold",
        "arch",
        "tap",
        "validation",
        "status",
        "stopped",
        "steps",
        "best@",
        "metric",
        "best",
        "baseline",
        "segments",
        "s",
    ]
    table = [header]
    for r in rows:
        seg = r.get("segments")
        table.append(
            [
                r["network"],
                r["variant"],
                str(r["fold"]),
                r["arch"],
                r.get("tap") or "-",
                str(r.get("validation_source") or "-"),
                str(r.get("status") or "-"),
                str(r.get("stop_reason") or "-"),
                f"{_num(r.get('steps_run'))}/{_num(r.get('max_steps'))}",
                _num(r.get("best_step")),
                str(r.get("metric") or "-"),
                _num(r.get("best_score")),
                _num(r.get("baseline_score")),
                "-" if seg is None else ("yes" if seg else "NO"),
                _num(r.get("seconds"), 0),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = (
        "validation: held_out = scored on subjects never trained on; training = too few subjects to "
        "hold any out, scored on its training subjects (optimistic); none = validation off.\n"
        "metric: dice = victim's mean foreground Dice on held-out private subjects (higher is better; "
        "baseline = majority label per voxel of its training labels); mse = decoder's reconstruction "
        "error on held-out attack subjects (lower is better; baseline = the attacker's mean image).\n"
    )
    return "\n".join(lines) + "\n" + notes


def format_victim_check(check: dict[str, Any]) -> str:
    """One line when every victim segments, else the check's warning message."""
    if check["ok"]:
        n = check["n_victims"]
        if n == 0:
            return "victims: no convergence records (trained by an older version, or not yet)"
        extra = f" ({len(check['unjudged'])} not judged)" if check["unjudged"] else ""
        return f"victims: all {n} segment (validation Dice clearly above the baseline){extra}"
    return check["message"]
