"""``report.html``: one self-contained page with every table, figure and setting.

Figures are embedded as base64 ``data:`` URIs and the style sheet is inline, so the file
opens offline and can be mailed or archived on its own: it references no external asset
(no ``http(s)`` ``src``/``href``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_invert import __version__
from napari_invert._io import write_text_atomic
from napari_invert.report import paper
from napari_invert.report.figures import FigureFile
from napari_invert.report.tables import METRICS, Table, metric_label

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1300px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table.results { border-collapse: collapse; margin: 1em 0; font-size: .85em; }
table.results caption { text-align: left; font-weight: bold; padding: .3em 0; }
table.results th, table.results td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
table.results th { background: #f0f0f0; }
table.results td:first-child, table.results th:first-child { text-align: left; }
ul.notes { font-size: .8em; color: #555; }
.verdict { background: #fff7e0; border-left: 4px solid #e0a000; padding: .6em 1em; }
.skipped { background: #fbeaea; border-left: 4px solid #c33; padding: .6em 1em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #444; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .8em; }
"""

_SECTIONS = (
    ("reconstructions", "Reconstructions (Figures 5-6 style)"),
    ("deformation", "Deformation fields (Figure 7 style)"),
    ("similarity", "Similarity matrices"),
    ("ranks", "Rank of the true original"),
    ("prior", "Prior-relative leakage"),
    ("dice", "Dice"),
    ("training", "Training curves"),
)


def _e(text: Any) -> str:
    return html.escape(str(text))


def image_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure_html(fig: FigureFile) -> str:
    return (
        f'<figure><img alt="{_e(fig.title)}" src="{image_data_uri(fig.path)}">'
        f"<figcaption><b>{_e(fig.title)}.</b> {_e(fig.caption)} "
        f"<span style='color:#888'>({_e(fig.path.name)})</span></figcaption></figure>"
    )


def _identification_html(summary: Any) -> str:
    head = [
        "Experiment",
        "Metric",
        "top-1",
        "top-5",
        "mean rank",
        "median rank",
        "candidates",
        "chance top-1",
        "p (≥ top-1 by guessing)",
    ]
    rows = []
    for ev in summary.experiments:
        for metric, d in ev.identification.items():
            rows.append(
                [
                    ev.experiment.label,
                    metric_label(metric),
                    f"{d['top1']}/{d['n_queries']}",
                    f"{d['top5']}/{d['n_queries']}",
                    f"{d['mean_rank']:.2f}",
                    f"{d['median_rank']:.1f}",
                    d["candidates_per_row"],
                    f"{d['chance_top1']:.3f}",
                    f"{d['p_value_top1']:.2g}",
                ]
            )
    table = Table(
        "identification",
        "Re-identification per experiment and metric",
        head,
        [[str(c) for c in r] for r in rows],
        [],
        [],
        ["p: binomial probability of at least this many top-1 hits when guessing at random."],
    )
    return table.to_html()


def _splits_html(splits: dict[str, Any]) -> str:
    rows = []
    for f in splits.get("folds", []):
        rows.append(
            [
                str(f.get("fold")),
                str(len(f.get("private", []))),
                ", ".join(f.get("private", [])),
                str(len(f.get("attack", []))),
            ]
        )
    t = Table(
        "splits",
        f"Splits (seed {splits.get('seed')})",
        ["Fold", "n private", "private subjects", "n attack"],
        rows,
        [],
        [],
    )
    return t.to_html()


def _citations(results: Any) -> list[str]:
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


def build_report(results: Any, summary: Any, tables: Sequence[Table], figures: Sequence[FigureFile]) -> str:
    """The full HTML text of ``report.html``.

    ``results``: :class:`~napari_invert.study.results.StudyResults`; ``summary``:
    :class:`~napari_invert.report.evaluate.EvaluationSummary`.
    """
    cohort = results.cohort
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>napari-invert report — {_e(results.root.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Model-inversion audit: {_e(results.root.name)}</h1>",
        f"<p>Cohort <b>{_e(cohort.get('name', '?'))}</b> ({_e(cohort.get('kind', '?'))}), "
        f"{len(results.subject_ids)} subjects, {len(results.splits.get('folds', []))} folds, variants "
        f"{_e(', '.join(results.variants))}; grid {_e(cohort.get('shape'))} at "
        f"{_e(', '.join(f'{s:.2f}' for s in results.spacing))} mm. "
        f"Metrics: {_e(', '.join(summary.metrics))}; "
        f"deformation: {_e(summary.deformation_mode)}. Generated {now} by napari-invert {__version__} "
        f"in {summary.seconds:.1f} s.</p>",
        "<h2>Verdict</h2>",
        '<div class="verdict"><ul>' + "".join(f"<li>{_e(v)}</li>" for v in summary.verdicts) + "</ul></div>",
    ]
    if summary.skipped:
        parts.append(
            '<div class="skipped"><b>Not computed:</b><ul>'
            + "".join(f"<li>{_e(metric_label(k))}: {_e(v)}</li>" for k, v in summary.skipped.items())
            + "</ul></div>"
        )
    parts += [
        "<h2>Which number is which</h2><ul>",
        *[f"<li><b>{_e(METRICS[m][0])}</b>: {_e(METRICS[m][1])}.</li>" for m in METRICS],
        "<li>The paper's SSIM (0.73 / 0.61 for U-Net / SegNet) is the <b>global</b> masked SSIM; compare it "
        "with our 'SSIM (global, paper's)' column, not with the windowed SSIM.</li>",
        "<li>The paper's MCC is the Pearson correlation of grey levels.</li>",
        "<li><b>Prior</b>: the attacker's mean image of its own (attack) subjects. A skull-stripped mean "
        "brain already scores high under SSIM; what shows leakage is the <i>gain</i> over the prior and, "
        "above all, "
        "re-identification (the rank of the true subject among all candidates).</li>",
        "<li>Scoring region: "
        + (
            "the candidate original's voxels above a threshold (region = foreground)."
            if getattr(summary, "region", "mask") == "foreground"
            else "the candidate original's mask (data/&lt;variant&gt;/masks)."
        )
        + "</li>",
        f"<li>SSIM data range L (max - min over all originals of the variant, one L for every pair): "
        f"{_e(', '.join(f'{k}: {v:.3g}' for k, v in summary.data_range.items()))}.</li>",
        "</ul>",
        "<h2>Tables</h2>",
    ]
    parts += [t.to_html() for t in tables]
    parts.append(_identification_html(summary))
    for section, heading in _SECTIONS:
        figs = [f for f in figures if f.section == section]
        if figs:
            parts.append(f"<h2>{_e(heading)}</h2>")
            parts += [_figure_html(f) for f in figs]
    if summary.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in summary.notes) + "</ul>")
    parts.append("<h2>Splits</h2>")
    parts.append(_splits_html(results.splits))
    config_text = results.folder.config_path.read_text(encoding="utf-8")
    parts.append("<h2>Configuration (config.yaml)</h2>")
    parts.append(f"<pre>{_e(config_text)}</pre>")
    parts.append(
        "<h2>References</h2><ul>" + "".join(f"<li>{_e(c)}</li>" for c in _citations(results)) + "</ul>"
    )
    parts.append(
        "<h2>Files</h2><p>Per-subject numbers: <code>metrics.csv</code>, <code>identification.csv</code>"
        + (", <code>dice.csv</code>" if summary.dice_rows else "")
        + "; tables as CSV/Markdown in <code>tables/</code>; similarity matrices as "
        "<code>similarity_*.npy</code> (+ JSON with row/column subject ids); <code>summary.json</code>.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    path: str | Path, results: Any, summary: Any, tables: Sequence[Table], figures: Sequence[FigureFile]
) -> Path:
    """Write ``report.html`` atomically."""
    return write_text_atomic(path, build_report(results, summary, tables, figures))
