"""What the Study widget's tree says about threat models, controls and convergence.

Pure Python (no napari/Qt): each function turns study files into ``(text, detail)`` rows
that the Study widget adds to its tree, so every number says which threat model it answers
and stands beside its control:

* :func:`arch_label`: ``unet@untrained`` -> ``"U-Net: untrained victim (control)"``;
* :func:`controls_rows`: ``evaluation/controls/controls.json`` (feature inversion: members vs
  non-members top-1, untrained victim top-1), via :func:`~napari_invert.report.controls.read_controls`;
* :func:`membership_rows`: the pooled membership AUC per architecture (training-data leakage),
  ``evaluation/membership/<variant>_<arch>.json``;
* :func:`convergence_rows`: each trained network's steps run, stop reason and best validation
  score vs its baseline, from :func:`~napari_invert.study.convergence.summarise_convergence`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from napari_invert._io import read_json
from napari_invert.study.layout import StudyFolder
from napari_invert.threat_models import (
    ARCH_NAMES,
    CONTROL_LABEL,
    FEATURE_INVERSION,
    TRAINING_DATA_LEAKAGE,
    ArchKey,
)

Row = tuple[str, str]


def arch_label(arch: str) -> str:
    """Display name of an architecture directory: the control is named with the network's
    display name (``unet@untrained`` -> ``U-Net: untrained victim (control)``), never
    ``x@untrained``; a trained victim is its display name (``unet`` -> ``U-Net``), as in the
    report and the Compare dock."""
    key = ArchKey.parse(arch)
    name = ARCH_NAMES.get(key.arch, key.arch)
    if key.is_control:
        return f"{name}: {CONTROL_LABEL}"
    if key.condition:
        return f"{name}: {key.condition} victim"
    return name


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _top1(group: dict[str, Any] | None) -> str:
    if not group or not group.get("n"):
        return "–"
    return f"{group.get('top1', 0)}/{group['n']}"


def controls_rows(doc: dict[str, Any] | None) -> list[Row]:
    """One row per trained experiment of ``controls.json``: members vs non-members top-1 and the
    untrained victim's top-1 (feature inversion). Empty when the controls were not evaluated."""
    if not doc:
        return []
    summaries = doc.get("summaries", [])
    untrained = {
        (s["variant"], s["arch"], s["tap"]): s for s in summaries if s.get("condition") == "untrained"
    }
    rows: list[Row] = []
    for s in summaries:
        if s.get("condition") == "untrained":
            continue
        victim = (
            arch_label(s["arch"])
            if s.get("condition") in (None, "trained")
            else f"{arch_label(s['arch'])} ({s['condition']})"
        )
        control = untrained.get((s["variant"], s["arch"], s["tap"]))
        detail = (
            f"top-1 members {_top1(s.get('members'))}, non-members {_top1(s.get('nonmembers'))}; "
            f"{CONTROL_LABEL} {_top1(control.get('members')) if control else 'not run'}"
        )
        rows.append((f"{victim} {s['tap']} ({s['variant']})", detail))
    for s in summaries:  # controls without a trained counterpart still show up
        if s.get("condition") == "untrained" and not any(
            (r["variant"], r["arch"], r["tap"]) == (s["variant"], s["arch"], s["tap"])
            for r in summaries
            if r.get("condition") != "untrained"
        ):
            label = f"{arch_label(s['arch'])} {s['tap']} ({s['variant']})"
            rows.append((label, f"{CONTROL_LABEL} top-1 {_top1(s.get('members'))}"))
    return rows


def membership_rows(folder: StudyFolder, variants: Iterable[str], archs: Iterable[str]) -> list[Row]:
    """Pooled membership AUC per (variant, trained architecture) with its interval and the
    untrained victim's AUC (training-data leakage; chance = 0.5). Only where a result exists."""
    rows: list[Row] = []
    for variant in variants:
        for arch in archs:
            if ArchKey.parse(arch).is_control:
                continue
            path = folder.membership_pooled_json(variant, arch)
            if not path.is_file():
                continue
            try:
                doc = read_json(path)
            except Exception as exc:  # a broken file is shown, never hides the others
                rows.append((f"{arch_label(arch)} ({variant})", f"unreadable: {exc}"))
                continue
            untrained = doc.get("controls", {}).get("untrained_victim", {}).get("attacks", {})
            parts = []
            for name, s in doc.get("attacks", {}).items():
                ci = s.get("auc_ci") or [None, None]
                text = f"{name} AUC {_num(s.get('auc'), 2)} [{_num(ci[0], 2)}, {_num(ci[1], 2)}]"
                if name in untrained:
                    text += f", {CONTROL_LABEL} {_num(untrained[name].get('auc'), 2)}"
                parts.append(text)
            n = f"{doc.get('n_members', '?')} members vs {doc.get('n_nonmembers', '?')} non-members"
            rows.append((f"{arch_label(arch)} ({variant})", "; ".join(parts) + f" ({n}; chance 0.5)"))
    return rows


def convergence_rows(rows: list[dict[str, Any]]) -> list[Row]:
    """One line per trained network of :func:`summarise_convergence`'s rows."""
    out: list[Row] = []
    for r in rows:
        where = f"{r.get('variant')} fold {r.get('fold')} {arch_label(str(r.get('arch')))}"
        if r.get("network") == "decoder":
            where += f" decoder {r.get('tap')}"
        else:
            where += " victim"
        if r.get("status") == "unreadable":
            out.append((where, f"unreadable record: {r.get('segments_reason', '')}"))
            continue
        steps = f"{_num(r.get('steps_run'))}/{_num(r.get('max_steps'))} steps"
        stop = r.get("stop_reason") or r.get("status") or "?"
        detail = f"{steps}, stopped: {stop}"
        if r.get("metric"):
            detail += (
                f"; best {r['metric']} {_num(r.get('best_score'))} vs "
                f"{r.get('baseline') or 'baseline'} {_num(r.get('baseline_score'))}"
            )
        else:
            detail += "; no validation"
        if r.get("network") == "victim" and r.get("test_score") is not None:
            detail += (
                f"; unseen Dice {_num(r.get('test_score'))} vs baseline {_num(r.get('test_baseline'))} "
                f"({r.get('n_test')} subjects)"
            )
        if r.get("network") == "victim" and r.get("segments") is False:
            detail += " — DOES NOT SEGMENT" + (" (memorised)" if r.get("failure") == "memorised" else "")
        out.append((where, detail))
    return out


THREAT_HEADINGS = {
    "reconstructions": f"Reconstructions — {FEATURE_INVERSION}",
    "controls": f"Controls — {FEATURE_INVERSION}",
    "membership": f"Membership inference — {TRAINING_DATA_LEAKAGE}",
}


def victim_warning_text(study: Any) -> str:
    """The victim check's message (which conclusions still hold) when the study's victims do not
    segment; ``""`` when they do, or when there is no study or no convergence record."""
    if study is None:
        return ""
    from napari_invert.study.convergence import victim_segmentation_check

    try:
        check = victim_segmentation_check(study.folder)
    except Exception as exc:  # a broken record must not stop the study from opening
        return f"Could not check whether the victims segment: {exc}"
    return "" if check["ok"] else str(check["message"])


def threat_sections(study: Any, archs: list[str]) -> list[tuple[str, str, list[Row]]]:
    """The tree's extra top-level sections: ``(heading, detail, rows)`` for the controls
    (feature inversion), the pooled membership AUCs (training-data leakage) and convergence.
    A section whose files are absent says so instead of vanishing."""
    from napari_invert.report.controls import read_controls
    from napari_invert.study.convergence import summarise_convergence

    sections: list[tuple[str, str, list[Row]]] = []
    try:
        controls = controls_rows(read_controls(study.root))
        detail = "" if controls else "not evaluated (napari-invert controls STUDY)"
    except Exception as exc:
        controls, detail = [], f"unreadable: {exc}"
    sections.append((THREAT_HEADINGS["controls"], detail, controls))
    membership = membership_rows(study.folder, study.variants, archs)
    sections.append((THREAT_HEADINGS["membership"], "" if membership else "no pooled result", membership))
    conv = convergence_rows(summarise_convergence(study.folder))
    sections.append((f"Convergence ({len(conv)} networks)", "" if conv else "no convergence records", conv))
    return sections
