"""Report pieces for membership inference (threat model "training-data leakage").

Input: pooled results per architecture, as returned by
:func:`napari_invert.membership.pool_membership` (``{arch: pooled_doc}``).

* :func:`membership_roc_figure`: ROC curves of every attack, one panel per architecture,
  chance diagonal and the untrained-victim control's AUC in the legend (PNG, Agg canvas,
  no pyplot, written atomically);
* :func:`membership_table_rows`: the numbers as plain rows;
* :func:`membership_section_html` / :func:`membership_section_markdown`: a report
  section (heading, what is measured, table with intervals beside the control, what the
  number of candidates supports).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_invert._io import atomic_path

THREAT_MODEL = "training-data leakage"
TITLE = "Membership inference (threat model: training-data leakage)"
EXPLANATION = (
    "The attacker holds the trained victim's weights and a candidate scan with its labels, "
    "and asks: was this patient in the training set? Members are the fold's private "
    "(training) subjects; non-members are held-out subjects that neither the victim nor the "
    "attacker trained on. Threshold attacks use the victim's fit (loss, Dice) directly; the "
    "likelihood-ratio attacks (LiRA, Carlini et al. 2022) compare it with shadow segmenters "
    "the attacker trained on halves of its own subjects. AUC 0.5 = no leakage. The control is "
    "the same architecture at initialisation, attacked the same way."
)

_LABELS = {
    "loss_threshold": "loss threshold",
    "dice_threshold": "Dice threshold",
    "confidence_threshold": "confidence threshold",
    "lira_offline": "LiRA offline",
    "lira_global": "LiRA global",
}


def attack_label(name: str) -> str:
    """Readable name of an attack."""
    return _LABELS.get(name, name)


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _ci(values: Sequence[float] | None) -> str:
    if not values:
        return ""
    return f"[{values[0]:.2f}, {values[1]:.2f}]"


def membership_roc_figure(
    path: str | Path,
    pooled: Mapping[str, dict[str, Any]],
    title: str = "Membership inference ROC (training-data leakage)",
    dpi: int = 110,
) -> Path:
    """ROC curves (FPR vs TPR, linear axes) of every attack per architecture; returns ``path``."""
    if not pooled:
        raise ValueError("no pooled membership results to plot")
    archs = list(pooled)
    fig = _figure(4.2 * len(archs) + 0.4, 4.6)
    axes = fig.subplots(1, len(archs), squeeze=False)[0]
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.84, wspace=0.25)
    for ax, arch in zip(axes, archs):
        doc = pooled[arch]
        control = doc.get("controls", {}).get("untrained_victim", {}).get("attacks", {})
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance (AUC 0.50)")
        for name, res in doc["attacks"].items():
            label = f"{attack_label(name)}: AUC {res['auc']:.2f} {_ci(res.get('auc_ci'))}"
            if name in control:
                label += f"; untrained {control[name]['auc']:.2f}"
            ax.plot(res["roc"]["fpr"], res["roc"]["tpr"], drawstyle="default", lw=1.6, label=label)
        fpr = doc.get("support", {}) or {}
        if fpr.get("fpr"):
            ax.axvline(fpr["fpr"], color="0.8", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false-positive rate (non-members called members)", fontsize=8)
        ax.set_ylabel("true-positive rate (members found)", fontsize=8)
        ax.set_title(
            f"{arch} ({doc['variant']}): {doc['n_members']} members vs {doc['n_nonmembers']} non-members",
            fontsize=9,
        )
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def membership_table_rows(pooled: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (architecture, attack): pooled AUC with interval and p-value, TPR at the
    configured FPR (and whether the non-members support it), the untrained control's AUC,
    and the per-fold AUCs."""
    rows = []
    for arch, doc in pooled.items():
        control = doc.get("controls", {}).get("untrained_victim", {}).get("attacks", {})
        for name, res in doc["attacks"].items():
            c = control.get(name, {})
            rows.append(
                {
                    "arch": arch,
                    "variant": doc["variant"],
                    "attack": name,
                    "auc": res["auc"],
                    "auc_ci": res["auc_ci"],
                    "auc_p_value": res["auc_p_value"],
                    "fpr": res["fpr"],
                    "tpr_at_fpr": res["tpr_at_fpr"],
                    "tpr_at_fpr_supported": res["tpr_at_fpr_supported"],
                    "untrained_auc": c.get("auc"),
                    "untrained_auc_ci": c.get("auc_ci"),
                    "fold_aucs": [f["auc"] for f in res.get("per_fold", [])],
                    "n_members": doc["n_members"],
                    "n_nonmembers": doc["n_nonmembers"],
                }
            )
    return rows


def _cells(row: dict[str, Any]) -> list[str]:
    tpr = f"{row['tpr_at_fpr']:.2f}" + ("" if row["tpr_at_fpr_supported"] else " (n too small)")
    control = (
        "" if row["untrained_auc"] is None else f"{row['untrained_auc']:.2f} {_ci(row['untrained_auc_ci'])}"
    )
    return [
        row["arch"],
        attack_label(row["attack"]),
        f"{row['auc']:.2f} {_ci(row['auc_ci'])}",
        f"{row['auc_p_value']:.3g}",
        tpr,
        control,
        ", ".join(f"{a:.2f}" for a in row["fold_aucs"]),
        f"{row['n_members']} / {row['n_nonmembers']}",
    ]


def _header(pooled: Mapping[str, dict[str, Any]]) -> list[str]:
    fpr = next(iter(pooled.values()))["attacks"]
    f = next(iter(fpr.values()))["fpr"] if fpr else 0.0
    return [
        "architecture",
        "attack",
        "AUC [95 % CI]",
        "p (AUC > 0.5)",
        f"TPR at FPR {f:g}",
        "untrained control AUC",
        "AUC per fold",
        "members / non-members",
    ]


def _support_notes(pooled: Mapping[str, dict[str, Any]]) -> list[str]:
    notes = []
    for arch, doc in pooled.items():
        if doc.get("support"):
            notes.append(f"{arch}, pooled over folds {doc['folds']}: {doc['support']['statement']}.")
    notes.append(
        "Pooled AUCs rank all folds' candidates on one scale (each fold has its own victim); "
        "the per-fold AUCs are listed beside them. Intervals: stratified percentile bootstrap; "
        "p: one-sided permutation test."
    )
    return notes


def membership_section_markdown(
    pooled: Mapping[str, dict[str, Any]], figure: str | Path | None = None
) -> str:
    """The membership section as Markdown (``figure``: a PNG path to link, optional)."""
    lines = [f"## {TITLE}", "", EXPLANATION, ""]
    if pooled:
        header = _header(pooled)
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in membership_table_rows(pooled):
            lines.append("| " + " | ".join(_cells(row)) + " |")
        lines.append("")
        lines += [f"- {n}" for n in _support_notes(pooled)]
    else:
        lines.append("_No membership results in this study._")
    if figure is not None:
        lines += ["", f"![Membership inference ROC]({Path(figure).as_posix()})"]
    return "\n".join(lines) + "\n"


def membership_section_html(pooled: Mapping[str, dict[str, Any]], figure_src: str | None = None) -> str:
    """The membership section as an HTML fragment (``figure_src``: an ``<img>`` source,
    e.g. a ``data:`` URI, optional)."""
    e = html.escape
    parts = [f"<h2>{e(TITLE)}</h2>", f"<p>{e(EXPLANATION)}</p>"]
    if not pooled:
        parts.append("<p class='skipped'>No membership results in this study.</p>")
        return "\n".join(parts) + "\n"
    parts.append("<table class='results'><caption>Membership inference, pooled over folds</caption><tr>")
    parts += [f"<th>{e(h)}</th>" for h in _header(pooled)]
    parts.append("</tr>")
    for row in membership_table_rows(pooled):
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _cells(row)) + "</tr>")
    parts.append("</table>")
    parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in _support_notes(pooled)) + "</ul>")
    if figure_src is not None:
        parts.append(
            f"<figure><img alt='membership ROC' src='{e(figure_src)}'><figcaption>ROC curves of the "
            "membership attacks (threat model: training-data leakage); dashed: chance.</figcaption></figure>"
        )
    return "\n".join(parts) + "\n"
