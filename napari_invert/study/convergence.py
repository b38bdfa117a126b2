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
from napari_invert.models.validation import MEMORISED_IMPLICATIONS, VERDICT_IMPLICATIONS
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
    (``held_out`` / ``training`` / ``none``), ``n_validation``, ``seconds``, ``path``.
    Victims also carry the verdict: ``segments`` (bool, or None when not judged),
    ``segments_reason``, ``judged_on`` (``unseen``: the test on the fold's unseen subjects,
    which decides whenever the record holds one; ``validation``: the best validation Dice;
    None), ``validation_segments`` (the validation verdict alone), ``test_score`` /
    ``test_baseline`` (mean Dice on the unseen subjects, victim / majority-label baseline),
    ``test_gain_ci95``, ``n_test``, ``fitted_score`` (mean Dice on the subjects it trained
    on) and ``failure`` (``memorised`` / ``learned_little`` / None, see
    :func:`napari_invert.study.unseen_test.failure_mode`). Unreadable records give a row with
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
                **(_verdict(rec) if network == "victim" else _NO_VERDICT),
                "seconds": rec.get("seconds"),
                "path": str(path),
            }
        )
    return rows


_NO_VERDICT: dict[str, Any] = {
    "segments": None,
    "segments_reason": "",
    "judged_on": None,
    "validation_segments": None,
    "test_score": None,
    "test_baseline": None,
    "test_gain_ci95": None,
    "n_test": 0,
    "fitted_score": None,
    "failure": None,
}


def _verdict(rec: dict[str, Any]) -> dict[str, Any]:
    """A victim's verdict: on the fold's unseen subjects when its record holds a current test
    (:mod:`napari_invert.study.unseen_test`), else on its validation subjects."""
    from napari_invert.study.unseen_test import unseen_test_is_current

    test = rec.get("test")
    out = {**_NO_VERDICT, "validation_segments": rec.get("segments")}
    if isinstance(test, dict) and unseen_test_is_current(rec, test.get("subjects") or []):
        out.update(
            test_score=test.get("mean_dice"),
            test_baseline=test.get("mean_baseline"),
            test_gain_ci95=test.get("gain_ci95"),
            n_test=int(test.get("n") or 0),
            fitted_score=test.get("mean_fitted_dice"),
            failure=test.get("failure"),
        )
        if test.get("segments") is not None:
            out.update(segments=bool(test["segments"]), segments_reason=test.get("reason", ""))
            out["judged_on"] = "unseen"
            return out
    out.update(segments=rec.get("segments"), segments_reason=rec.get("segments_reason", ""))
    out["judged_on"] = None if rec.get("segments") is None else "validation"
    return out  # failure stays None: without the test, memorised and learned-little look alike


def victim_segmentation_check(folder: str | Path | StudyFolder) -> dict[str, Any]:
    """Do the study's victims segment? (The one check behind every warning.)

    Returns ``{"ok": bool, "n_victims": int, "failing": [rows], "unjudged": [rows],
    "overruled": [rows], "message": str}``: ``failing`` are victims judged not to segment
    (Dice below ``min_validation_dice`` or not ``min_dice_gain`` above the majority-label
    baseline) on the fold's unseen subjects, or on their validation subjects when there is
    no such test; ``unjudged`` have no verdict (validation off, or training not finished);
    ``overruled`` segment on the unseen subjects although their validation score on a
    handful of subjects said otherwise. ``message`` is empty when ``ok``; otherwise a
    multi-line warning that names each failing victim, its Dice and baseline, and which
    conclusions still hold.
    """
    rows = [r for r in summarise_convergence(folder) if r["network"] == "victim"]
    failing = [r for r in rows if r.get("segments") is False]
    unjudged = [r for r in rows if r.get("segments") is None]
    overruled = [r for r in rows if r.get("segments") is True and r.get("validation_segments") is False]
    lines: list[str] = []
    if failing:
        lines.append(
            f"WARNING: {len(failing)} of {len(rows)} victim segmenters do not segment "
            "(Dice too low or not clearly above the majority-label baseline):"
        )
        for r in failing:
            lines.append(f"  - {r['variant']} fold {r['fold']} {r['arch']}: {_evidence(r)}")
        memorised = [r for r in failing if r.get("failure") == "memorised"]
        if len(memorised) < len(failing):
            lines.append("  " + VERDICT_IMPLICATIONS)
        if memorised:
            names = ", ".join(f"fold {r['fold']} {r['arch']}" for r in memorised)
            lines.append(f"  Memorised ({names}): " + MEMORISED_IMPLICATIONS)
        on_validation = [r for r in failing if r["judged_on"] == "validation"]
        if on_validation:
            few = any(_judged_on(r) and r["n_validation"] <= 2 for r in on_validation)
            lines.append(
                "  Judged on validation subjects only"
                + (", one or two of them: a noisy verdict (another seed can pass)" if few else "")
                + ". Rerun `napari-invert study` on this folder to test each finished victim on its "
                "fold's unseen subjects (nothing is retrained): that test decides, and it tells a victim "
                "that memorised its training subjects (membership inference then leaks, strongly) from "
                "one that learned little."
            )
        if memorised:
            lines.append(
                "  A memorised victim needs spatial augmentation (segmenter_training.rotate_deg, "
                "scale_fraction, shift_voxels) or more training subjects, not more steps."
            )
        if len(memorised) < len(failing):
            lines.append(
                "  Otherwise try more steps (segmenter_training.steps), a different lr, or check the labels."
            )
        lines.append("  `napari-invert study-info STUDY` shows every curve's summary.")
    return {
        "ok": not failing,
        "n_victims": len(rows),
        "failing": failing,
        "unjudged": unjudged,
        "overruled": overruled,
        "message": "\n".join(lines),
    }


def _evidence(row: dict[str, Any]) -> str:
    """What a victim's verdict rests on, e.g. ``Dice 0.61 vs baseline 0.60 on 30 unseen
    subjects (gain 95% CI [...]); validation: best Dice 0.66 vs 0.62 on 2 held-out subjects
    (stopped: plateau after 400 steps)``."""
    validation = (
        f"best Dice {_num(row['best_score'])} vs baseline {_num(row['baseline_score'])}{_judged_on(row)} "
        f"(stopped: {row['stop_reason']} after {row['steps_run']} steps)"
    )
    if row.get("judged_on") != "unseen":
        return validation
    ci = row.get("test_gain_ci95") or [float("nan")] * 2
    fitted = ""
    if row.get("fitted_score") is not None:
        fitted = f"; Dice {_num(row['fitted_score'])} on the subjects it trained on"
        if row.get("failure") == "memorised":
            fitted += " (memorised)"
    return (
        f"Dice {_num(row['test_score'])} vs baseline {_num(row['test_baseline'])} on {row['n_test']} "
        f"unseen subject{'s' if row['n_test'] != 1 else ''} (gain 95% CI [{_num(ci[0])}, {_num(ci[1])}])"
        f"{fitted}; validation: {validation}"
    )


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
        "unseen",
        "baseline",
        "segments",
        "s",
    ]
    table = [header]
    for r in rows:
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
                _num(r.get("test_score")),
                _num(r.get("test_baseline")),
                _segments_cell(r),
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
        "unseen: the finished victim's mean Dice on the fold's unseen (attack) subjects, beside the same "
        "kind of baseline; segments is judged on it (on the validation Dice, marked 'valid.', when "
        "there is no such test); memorised = it scores clearly better on the subjects it trained on.\n"
    )
    return "\n".join(lines) + "\n" + notes


def _segments_cell(row: dict[str, Any]) -> str:
    """``yes`` / ``NO`` / ``-``, with ``(memorised)`` and ``(valid.)`` (judged on validation)."""
    seg = row.get("segments")
    if seg is None:
        return "-"
    text = "yes" if seg else "NO"
    if row.get("failure") == "memorised":
        text += " (memorised)"
    if row.get("judged_on") == "validation":
        text += " (valid.)"
    return text


def format_victim_check(check: dict[str, Any]) -> str:
    """One line when every victim segments, else the check's warning message."""
    if check["ok"]:
        n = check["n_victims"]
        if n == 0:
            return "victims: no convergence records (trained by an older version, or not yet)"
        extra = f" ({len(check['unjudged'])} not judged)" if check["unjudged"] else ""
        text = f"victims: all {n} segment (Dice clearly above the majority-label baseline){extra}"
        if check.get("overruled"):
            names = ", ".join(f"{r['variant']} fold {r['fold']} {r['arch']}" for r in check["overruled"])
            text += (
                f"; the validation score flagged {names}, but validation rests on "
                "few subjects and the test on the fold's unseen subjects decides"
            )
        return text
    return check["message"]
