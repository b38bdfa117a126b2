"""The privacy-utility frontier section: table (CSV + Markdown), figure, verdict, HTML.

:func:`write_frontier` is what ``napari-invert frontier STUDY... [--out DIR]`` runs: it
collects the points of :mod:`napari_invert.defences.frontier` from one or more study
folders and writes into ``DIR`` (default ``<first study>/evaluation/frontier/``)::

    frontier.csv       one row per defence x strength (and the undefended reference)
    frontier.md        verdict + table (Markdown)
    frontier.json      every point with its intervals and Pareto flags
    frontier_<study>_<variant>_<arch>.png   utility against each privacy measure
    frontier.html      self-contained section (figures embedded), also used by the report

:func:`frontier_section_html` returns the HTML section for another page to embed.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert.defences.frontier import (
    ARCH_LABELS,
    MAX_DICE_COST,
    MEASURES,
    FrontierPoint,
    collect_points,
    verdict,
)
from napari_invert.study.layout import StudyFolder

COLUMNS = (
    "study",
    "variant",
    "arch",
    "defence",
    "acts on",
    "folds",
    "Dice (unseen) [95% CI]",
    "majority-label map Dice (same subjects)",
    "Dice cost [95% CI]",
    "feature inversion: re-identified (top-1)",
    "top-1 rate [95% CI]",
    "chance top-1",
    "p (vs chance)",
    "feature inversion: SSIM gain over prior [95% CI]",
    "feature inversion: member - non-member gain [95% CI]",
    "training-data leakage: MIA AUC [95% CI]",
    "epsilon (delta)",
    "Pareto (re-id / SSIM gain / AUC)",
)

_COLOURS = {
    "none": "black",
    "expose_less": "tab:blue",
    "noise": "tab:orange",
    "quantise": "tab:green",
    "nopeek": "tab:red",
    "adversarial": "tab:purple",
    "dp_sgd": "tab:brown",
}


def table_rows(points: Sequence[FrontierPoint]) -> list[list[str]]:
    """One row of :data:`COLUMNS` per point (reference first within each group)."""
    rows = []
    for p in sorted(points, key=lambda q: (q.group, not q.is_reference, q.kind, q.strength)):
        eps = "" if p.epsilon is None else f"{p.epsilon:.2f} ({p.delta:g})"
        front = " / ".join("yes" if p.front.get(a) else "-" for a, _, _ in MEASURES)
        rows.append(
            [
                p.study,
                p.variant,
                ARCH_LABELS.get(p.arch, p.arch),
                p.label,
                p.threat_model,
                ",".join(map(str, p.folds)),
                p.dice.fmt(),
                _trivial_cell(p),
                "reference" if p.is_reference else p.dice_cost.fmt(),
                f"{p.reid_hits}/{p.reid_top1.n}",
                p.reid_top1.fmt(2),
                f"{p.chance_top1:.3f}",
                f"{p.p_value_top1:.3g}",
                p.ssim_gain.fmt(),
                p.member_gap.fmt() if p.member_gap.n else "n/a (no held-out subjects)",
                p.mia_auc.fmt(),
                eps,
                front,
            ]
        )
    return rows


def _trivial_cell(p: FrontierPoint) -> str:
    """The majority-label map's Dice, and whether the point falls below it."""
    if not math.isfinite(p.trivial_dice.value):
        return "n/a"
    return f"{p.trivial_dice.value:.3f}" + (" (point below it)" if p.below_trivial else "")


def frontier_csv(points: Sequence[FrontierPoint]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(table_rows(points))
    return buf.getvalue()


def frontier_markdown(points: Sequence[FrontierPoint]) -> str:
    """Verdict, notes and table as Markdown."""
    lines = ["## Defences: the privacy-utility frontier", ""]
    lines += [f"**Verdict.** {v}" for v in verdict(points)]
    lines += ["", *[f"- {n}" for n in _notes(points)], ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(points)]
    return "\n".join(lines) + "\n"


def _notes(points: Sequence[FrontierPoint]) -> list[str]:
    n_members = sorted({p.reid_top1.n for p in points})
    attacks = sorted({p.mia_attack for p in points if p.mia_attack})
    return [
        "Utility: the deployed victim's mean foreground Dice on subjects it never trained on "
        "(defence included: noise/quantisation also reach the victim's own decoder). Its control: "
        "a segmenter that ignores the image, the majority label of the members' labels at each voxel, "
        "scored on the same subjects (dashed grey line in the figures); a point below it segments "
        "worse than that map.",
        "Feature inversion (the attacker reads the exposed activations of a scan): the attacker's "
        "decoder is retrained from scratch against every defended victim, on its own subjects; "
        "re-identification ranks each member's reconstruction among all subjects by windowed SSIM.",
        f"'At chance' means guessing re-identifies as many with probability >= 0.05 (binomial); with "
        f"{', '.join(map(str, n_members))} member(s) per point this is a weak test, not proof of no leakage.",
        "Training-data leakage (the attacker has the weights): membership-inference AUC, 0.5 = chance; "
        f"attack: {', '.join(attacks) or 'n/a'}.",
        "DP-SGD bounds training-data leakage (epsilon from Opacus' RDP accountant); it is not "
        "designed against feature inversion. SegNet's pooling indices are integers: noise and "
        "quantisation leave them exposed unchanged.",
        f"Pareto: non-dominated in (higher Dice, lower leakage) among the points of one architecture; "
        f"the verdict allows a Dice cost of {MAX_DICE_COST}.",
    ]


def frontier_figure(points: Sequence[FrontierPoint], path: str | Path, title: str) -> Path:
    """Dice against each privacy measure; intervals on both axes; front joined."""
    from napari_invert.report.figures import _figure, save_figure

    fig = _figure(4.2 * len(MEASURES), 3.9)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.2, top=0.86, wspace=0.28)
    for i, (attr, label, threat) in enumerate(MEASURES):
        ax = fig.add_subplot(1, len(MEASURES), i + 1)
        labels: list[tuple[str, float, float]] = []
        for p in points:
            x, y = getattr(p, attr), p.dice
            if not (math.isfinite(x.value) and math.isfinite(y.value)):
                continue
            ax.errorbar(
                x.value,
                y.value,
                xerr=[[x.value - x.lo], [x.hi - x.value]],
                yerr=[[y.value - y.lo], [y.hi - y.value]],
                fmt="*" if p.is_reference else "o",
                ms=11 if p.is_reference else 6,
                color=_COLOURS.get(p.kind, "grey"),
                ecolor="lightgrey",
                capsize=2,
            )
            if not p.is_reference:  # the star and the legend name the reference
                labels.append((f"{p.strength:g}", x.value, y.value))
        trivial = next((p.trivial_dice.value for p in points if math.isfinite(p.trivial_dice.value)), None)
        if trivial is not None:
            ax.axhline(trivial, color="grey", lw=0.8, ls="--")
            ax.annotate(
                "majority-label map", (0.0, trivial), xycoords=("axes fraction", "data"),
                xytext=(2, 2), textcoords="offset points", ha="left", va="bottom", fontsize=6, color="grey",
            )  # fmt: skip
        front = sorted((p for p in points if p.front.get(attr)), key=lambda p: getattr(p, attr).value)
        if len(front) > 1:
            ax.plot([getattr(p, attr).value for p in front], [p.dice.value for p in front], "k--", lw=1)
        chance = {"reid_top1": points[0].chance_top1 if points else None, "ssim_gain": 0.0, "mia_auc": 0.5}
        if chance.get(attr) is not None:
            ax.axvline(chance[attr], color="grey", lw=0.8, ls=":")
        ax.autoscale_view()
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        ax.set_xlim(x0, x1 + 0.1 * (x1 - x0))  # room for the labels of the points at the right edge
        ax.set_ylim(y0, y1 + 0.05 * (y1 - y0))
        place_labels(ax, labels, fontsize=7)
        ax.set_xlabel(f"{label}\n({threat}; dotted: chance)", fontsize=8)
        if i == 0:
            ax.set_ylabel("Dice on unseen subjects", fontsize=8)
        ax.tick_params(labelsize=7)
    handles = []
    from matplotlib.lines import Line2D

    for kind in sorted({p.kind for p in points}):
        handles.append(
            Line2D([], [], marker="*" if kind == "none" else "o", ls="", color=_COLOURS.get(kind, "grey"))
        )
    fig.legend(
        handles,
        ["undefended" if k == "none" else k for k in sorted({p.kind for p in points})],
        loc="lower center",
        ncol=7,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


#: directions a point's label may go, tried in this order (unit steps; NE first)
_LABEL_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1), (1, 0), (-1, 0))
#: distances (points) from the marker tried for each direction; beyond the first, a leader line
_LABEL_RADII = (4.0, 10.0, 17.0, 25.0, 34.0)
#: clearance (points) kept around each label's text
_LABEL_PAD = 1.5


def _label_box(px: float, py: float, dx: float, dy: float, w: float, h: float) -> tuple[float, ...]:
    """Text box (points) of a label offset by ``(dx, dy)`` from ``(px, py)``, anchored on the
    side facing the marker (as :func:`place_labels` sets ``ha``/``va``)."""
    x0 = px + dx if dx > 0 else px + dx - w if dx < 0 else px - w / 2
    y0 = py + dy if dy > 0 else py + dy - h if dy < 0 else py - h / 2
    return (x0, y0, x0 + w, y0 + h)


def _overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(ax: Any, labels: Sequence[tuple[str, float, float]], fontsize: float = 7) -> None:
    """Annotate each ``(text, x, y)`` (data coordinates) near its marker without overlap.

    For each label (left to right) the first free spot is taken: directions
    :data:`_LABEL_DIRECTIONS` at the distances :data:`_LABEL_RADII`, a spot being free when its
    text box (estimated from the font size: 0.6 em per character, 1 em high, plus
    :data:`_LABEL_PAD`) lies inside the
    axes and overlaps no marker and no label placed before. A label moved farther than the
    nearest distance gets a grey leader line; when no spot is free it goes to the first one.
    Call after everything that sets the axes' limits is drawn.
    """
    ax.autoscale_view()
    to_points = 72.0 / ax.figure.dpi
    frame = [v * to_points for v in ax.get_window_extent().extents]
    marks = [tuple(v * to_points for v in ax.transData.transform((x, y))) for _, x, y in labels]
    taken = [(mx - 4.0, my - 4.0, mx + 4.0, my + 4.0) for mx, my in marks]
    spots = [(r * ux, r * uy) for r in _LABEL_RADII for ux, uy in _LABEL_DIRECTIONS]
    for text, x, y in sorted(labels, key=lambda t: (t[1], t[2])):
        px, py = (v * to_points for v in ax.transData.transform((x, y)))
        w, h = 0.6 * fontsize * len(text) + 2 * _LABEL_PAD, fontsize + _LABEL_PAD
        dx, dy = spots[0]
        for sx, sy in spots:
            box = _label_box(px, py, sx, sy, w, h)
            inside = frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]
            if inside and not any(_overlaps(box, t) for t in taken):
                dx, dy = sx, sy
                break
        taken.append(_label_box(px, py, dx, dy, w, h))
        leader = math.hypot(dx, dy) > math.hypot(*spots[0]) + 1e-6
        ax.annotate(
            text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
            ha="left" if dx > 0 else "right" if dx < 0 else "center",
            va="bottom" if dy > 0 else "top" if dy < 0 else "center",
            arrowprops={"arrowstyle": "-", "color": "0.35", "lw": 0.6} if leader else None,
        )  # fmt: skip


def _group_name(key: tuple[str, str, str]) -> str:
    return "_".join(key).replace("/", "_").replace(" ", "_")


def frontier_section_html(points: Sequence[FrontierPoint], figures: Sequence[Path]) -> str:
    """The report section: heading, verdict, notes, figures (embedded) and table."""
    from napari_invert.report.html import image_data_uri

    e = html.escape
    parts = ['<h2 id="frontier">Defences: the privacy-utility frontier</h2>']
    parts += [f'<p class="verdict">{e(v)}</p>' for v in verdict(points)]
    parts.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in _notes(points)) + "</ul>")
    for fig in figures:
        parts.append(
            f'<figure><img src="{image_data_uri(fig)}" alt="{e(fig.stem)}">'
            f"<figcaption>{e(fig.stem)}: utility against each privacy measure (95 % intervals; "
            "star: undefended; numbers: each defence's strength; black dashed: non-dominated points; "
            "grey dashed: the majority-label map's Dice).</figcaption></figure>"
        )
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table_rows(points))
    parts.append(f'<table class="results"><caption>Frontier</caption><tr>{head}</tr>{body}</table>')
    return "\n".join(parts)


def write_frontier(studies: Sequence[str | Path], out_dir: str | Path | None = None) -> dict[str, Any]:
    """Collect the points of ``studies`` and write every frontier file into ``out_dir``.

    Returns ``{"points": [...], "verdict": [...], "files": {name: path}}``.
    """
    from napari_invert.report.html import _CSS

    studies = [Path(s) for s in studies]
    out = Path(out_dir) if out_dir is not None else StudyFolder(studies[0]).frontier_dir
    out.mkdir(parents=True, exist_ok=True)
    points = collect_points(studies)
    files: dict[str, Path] = {}
    figures = []
    for key in sorted({p.group for p in points}):
        group = [p for p in points if p.group == key]
        name = f"frontier_{_group_name(key)}.png"
        title = f"{ARCH_LABELS.get(key[2], key[2])}, {key[1]} ({key[0]})"
        figures.append(frontier_figure(group, out / name, title))
        files[name] = out / name
    files["frontier.csv"] = write_text_atomic(out / "frontier.csv", frontier_csv(points))
    files["frontier.md"] = write_text_atomic(out / "frontier.md", frontier_markdown(points))
    lines = verdict(points)
    files["frontier.json"] = write_json_atomic(
        out / "frontier.json",
        {"verdict": lines, "max_dice_cost": MAX_DICE_COST, "points": [p.to_dict() for p in points]},
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Frontier</title><style>{_CSS}</style>"
        f"</head><body>{frontier_section_html(points, figures)}</body></html>\n"
    )
    files["frontier.html"] = write_text_atomic(out / "frontier.html", page)
    return {"points": points, "verdict": lines, "files": files}


def frontier_section(ctx: Any) -> Any:
    """Report section (:mod:`napari_invert.report.html`) when the study has defended victims."""
    import re

    from napari_invert.report.html import Section

    doc = getattr(ctx.summary, "frontier", None)
    if not doc or not doc.get("points"):
        return None
    figures = [f for f in doc["files"].values() if Path(f).suffix == ".png"]
    body = re.sub(r"^\s*<h2[^>]*>.*?</h2>\s*", "", frontier_section_html(doc["points"], figures), count=1)
    return Section("frontier", "Defences: the privacy-utility frontier", body)
