"""The general sections of ``report.html`` (see :mod:`napari_invert.report.html`).

Each ``*_section(ctx)`` returns a :class:`~napari_invert.report.html.Section` or ``None``.
Sections of a single concern live with that concern (``native.py``, ``deformation.py``,
``dice.py``).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from napari_invert import __version__
from napari_invert.report import paper
from napari_invert.report.html import ReportContext, Section, esc, figure_html
from napari_invert.report.tables import METRICS, Table, metric_label


def overview_html(ctx: ReportContext) -> str:
    """The paragraph under the title: cohort, grid, metrics, deformation mode and preset."""
    results, summary = ctx.results, ctx.summary
    cohort = results.cohort
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    deformation = esc(summary.deformation_mode)
    d = getattr(summary, "deformation_settings", {}) or {}
    if d.get("mode") in ("sample", "full"):
        deformation += f" ({esc(d.get('chance_text', ''))}; {esc(d.get('preset_text', ''))})"
    return (
        f"<p>Cohort <b>{esc(cohort.get('name', '?'))}</b> ({esc(cohort.get('kind', '?'))}), "
        f"{len(results.subject_ids)} subjects, {len(results.splits.get('folds', []))} folds, variants "
        f"{esc(', '.join(results.variants))}; grid {esc(cohort.get('shape'))} at "
        f"{esc(', '.join(f'{s:.2f}' for s in results.spacing))} mm. "
        f"Metrics: {esc(', '.join(summary.metrics))}; deformation: {deformation}. "
        f"Generated {now} by napari-invert {__version__} in {summary.seconds:.1f} s.</p>"
    )


def verdict_section(ctx: ReportContext) -> Section | None:
    summary = ctx.summary
    body = (
        '<div class="verdict"><ul>' + "".join(f"<li>{esc(v)}</li>" for v in summary.verdicts) + "</ul></div>"
    )
    if summary.skipped:
        body += (
            '<div class="skipped"><b>Not computed:</b><ul>'
            + "".join(f"<li>{esc(metric_label(k))}: {esc(v)}</li>" for k, v in summary.skipped.items())
            + "</ul></div>"
        )
    return Section("verdict", "Verdict", body)


def definitions_section(ctx: ReportContext) -> Section | None:
    summary = ctx.summary
    region = (
        "the candidate original's voxels above a threshold (region = foreground)."
        if getattr(summary, "region", "mask") == "foreground"
        else "the candidate original's mask (data/&lt;variant&gt;/masks)."
    )
    items = [
        *[f"<li><b>{esc(METRICS[m][0])}</b>: {esc(METRICS[m][1])}.</li>" for m in METRICS],
        "<li>Threat model of every number on this page: <b>feature inversion</b> — the attacker reads "
        "the victim encoder's outputs for a patient's scan and trains a decoder on its own (attack) "
        "subjects; the reconstructed patients are the victim's training (private) subjects.</li>",
        "<li>The paper's SSIM (0.73 / 0.61 for U-Net / SegNet) is the <b>global</b> masked SSIM; compare it "
        "with our 'SSIM (global, paper's)' column, not with the windowed SSIM.</li>",
        "<li>The paper's MCC is the Pearson correlation of grey levels.</li>",
        "<li><b>Prior</b> (the control): the attacker's mean image of its own (attack) subjects. A "
        "skull-stripped mean brain already scores high under SSIM; what shows leakage is the <i>gain</i> "
        "over the prior and, above all, re-identification (the rank of the true subject among the "
        "candidates, against its chance level).</li>",
        f"<li>Scoring region: {region}</li>",
        "<li>SSIM data range L (max - min over all originals of the variant, one L for every pair): "
        f"{esc(', '.join(f'{k}: {v:.3g}' for k, v in summary.data_range.items()))}.</li>",
    ]
    return Section("definitions", "Which number is which", "<ul>" + "".join(items) + "</ul>")


def tables_section(ctx: ReportContext) -> Section | None:
    tables = [ctx.tables[n] for n in ("table1", "table2", "table3") if n in ctx.tables]
    if not tables:
        return None
    return Section("tables", "Tables 1-3", "\n".join(t.to_html() for t in tables))


def identification_section(ctx: ReportContext) -> Section | None:
    mode = ctx.summary.deformation_mode
    head = [
        "Experiment",
        "Metric",
        "top-1",
        "top-5",
        "mean rank",
        "median rank",
        "candidates per reconstruction",
        "chance top-1",
        "p (≥ top-1 by guessing)",
    ]
    rows = []
    for ev in ctx.summary.experiments:
        for metric, d in ev.identification.items():
            sampled = metric == "deformation" and mode == "sample"
            rows.append(
                [
                    ev.experiment.label,
                    metric_label(metric),
                    f"{d['top1']}/{d['n_queries']}",
                    f"{d['top5']}/{d['n_queries']}",
                    f"{d['mean_rank']:.2f}",
                    f"{d['median_rank']:.1f}",
                    f"{d['candidates_per_row']} (true + {d['candidates_per_row'] - 1} sampled)"
                    if sampled
                    else str(d["candidates_per_row"]),
                    f"1/{d['candidates_per_row']} = {d['chance_top1']:.3f}",
                    f"{d['p_value_top1']:.2g}",
                ]
            )
    if not rows:
        return None
    table = Table(
        "identification",
        "Re-identification per experiment and metric",
        head,
        rows,
        [],
        [],
        [
            "p: binomial probability of at least this many top-1 hits when guessing at random "
            "(chance = 1 / candidates per reconstruction).",
            "A sampled deformation ranks the true original among itself and the sampled others only.",
        ],
    )
    return Section("identification", "Re-identification", table.to_html())


def _figures(ctx: ReportContext, tag: str, sid: str, title: str) -> Section | None:
    figs = ctx.figures_of(tag)
    if not figs:
        return None
    return Section(sid, title, "\n".join(figure_html(f) for f in figs))


def reconstructions_section(ctx: ReportContext) -> Section | None:
    return _figures(ctx, "reconstructions", "reconstructions", "Reconstructions (Figures 5-6 style)")


def similarity_section(ctx: ReportContext) -> Section | None:
    return _figures(ctx, "similarity", "similarity", "Similarity matrices")


def ranks_section(ctx: ReportContext) -> Section | None:
    return _figures(ctx, "ranks", "ranks", "Rank of the true original")


def prior_section(ctx: ReportContext) -> Section | None:
    return _figures(ctx, "prior", "prior", "Prior-relative leakage")


def training_section(ctx: ReportContext) -> Section | None:
    return _figures(ctx, "training", "training", "Training curves")


def notes_section(ctx: ReportContext) -> Section | None:
    notes = ctx.summary.notes
    if not notes:
        return None
    return Section("notes", "Notes", "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")


def splits_section(ctx: ReportContext) -> Section | None:
    splits = ctx.results.splits
    rows = [
        [
            str(f.get("fold")),
            str(len(f.get("private", []))),
            ", ".join(f.get("private", [])),
            str(len(f.get("attack", []))),
        ]
        for f in splits.get("folds", [])
    ]
    t = Table(
        "splits",
        f"Splits (seed {splits.get('seed')})",
        ["Fold", "n private", "private subjects", "n attack"],
        rows,
        [],
        [],
    )
    return Section("splits", "Splits", t.to_html())


def config_section(ctx: ReportContext) -> Section | None:
    text = ctx.results.folder.config_path.read_text(encoding="utf-8")
    return Section("config", "Configuration (config.yaml)", f"<pre>{esc(text)}</pre>")


def citations(results: Any) -> list[str]:
    """The method's and the cohort's references."""
    cohort = results.cohort
    kind = str(cohort.get("kind", "")).lower()
    name = str(cohort.get("name", "")).lower()
    root = str(cohort.get("root", "")).lower()
    out = [f"Method and published numbers: {paper.CITATION}."]
    if kind == "lpba40" or "lpba" in name or "lpba40" in root:
        out.append(f"Data: LPBA40 — {paper.LPBA40_CITATION} Used under LONI's data-use terms.")
    if kind == "ixi" or "ixi" in name or "ixi" in root:
        out.append(f"Data: {paper.IXI_CITATION}")
    return out


def references_section(ctx: ReportContext) -> Section | None:
    return Section(
        "references",
        "References",
        "<ul>" + "".join(f"<li>{esc(c)}</li>" for c in citations(ctx.results)) + "</ul>",
    )


def files_section(ctx: ReportContext) -> Section | None:
    layout = ctx.results.folder.evaluation

    def rel(p: Any) -> str:
        return f"<code>{esc(p.relative_to(layout.root))}</code>"

    items = [
        f"{rel(layout.metrics_csv)}: one row per subject, experiment and metric (value, prior, gain, rank)",
        f"{rel(layout.summary_json)}: everything on this page as JSON",
        f"{rel(layout.tables_dir)}/: the tables as CSV (full precision) and Markdown, "
        f"{rel(layout.identification_csv)}" + (f", {rel(layout.dice_csv)}" if ctx.summary.dice_rows else ""),
        f"{rel(layout.similarity_dir)}/: every similarity matrix as .npy with a .json of its row and "
        "column subject ids",
        f"{rel(layout.figures_dir)}/: the figures as PNG",
    ]
    if ctx.summary.native is not None:
        items.append(f"{rel(layout.native_scores_csv)}: native-grid scores per subject")
    if ctx.summary.deformation_mode != "off":
        items.append(
            f"{rel(layout.deformation_dir)}/: |u| maps (mm) of the true pairs; cache/ = registrations done"
        )
    return Section("files", "Files", "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")


def membership_section(ctx: ReportContext) -> Section | None:
    """Membership inference (training-data leakage), from :mod:`napari_invert.report.membership`."""
    import re

    from napari_invert.report.html import image_data_uri
    from napari_invert.report.membership import membership_section_html

    pooled = getattr(ctx.summary, "membership", None) or {}
    if not pooled:
        return None
    figs = ctx.figures_of("membership")
    body = membership_section_html(pooled, image_data_uri(figs[0].path) if figs else None)
    body = re.sub(r"^\s*<h2>.*?</h2>\s*", "", body, count=1, flags=re.S)  # the Section has the heading
    return Section("membership", "Membership inference (training-data leakage)", body)
