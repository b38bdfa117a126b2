"""``report.html``: one self-contained page assembled from small section builders.

Figures are embedded as base64 ``data:`` URIs and the style sheet is inline, so the file
opens offline and can be mailed or archived on its own: it references no external asset
(no ``http(s)`` ``src``/``href``).

How the page is built
---------------------
:func:`build_report` calls every builder of :data:`SECTION_BUILDERS` in order with one
:class:`ReportContext` (the study, the evaluation summary, the tables by name, the
figures). A builder returns a :class:`Section` (``id``, ``title``, HTML ``body``) or
``None`` when it has nothing to show; the page is the header, the warning banners, a table
of contents of the sections returned, and the sections.

Adding a section (e.g. membership inference, controls, training convergence, defences)
is adding a module and one line:

1. write ``napari_invert/report/<concern>.py`` with a function
   ``<concern>_section(ctx: ReportContext) -> Section | None`` that reads what it needs
   (``ctx.results.folder`` gives every path; ``ctx.summary``; ``ctx.tables``;
   ``ctx.figures``) and returns ``Section("<concern>", "Title", body_html)``. Use
   :func:`figure_html` for figures and :meth:`~napari_invert.report.tables.Table.to_html`
   for tables. State the threat model and the control beside every number.
2. add ``_lazy("napari_invert.report.<concern>", "<concern>_section")`` to
   :data:`SECTION_BUILDERS` where it belongs in the page.

The general sections (overview, definitions, tables, figures by kind, notes, splits,
configuration, references, files) are in :mod:`napari_invert.report.sections`.
"""

from __future__ import annotations

import base64
import html
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_invert._io import write_text_atomic
from napari_invert.report.figures import FigureFile
from napari_invert.report.tables import Table

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
.warning { background: #fde2e2; border: 2px solid #c33; padding: .6em 1em; margin: 1em 0; }
nav.toc { background: #f6f6f6; padding: .4em 1em; display: inline-block; }
nav.toc ol { margin: .3em 0; padding-left: 1.4em; columns: 2; column-gap: 3em; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #444; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .8em; }
"""


@dataclass
class Section:
    """One section of the page: anchor ``id``, ``title`` (heading and TOC entry), HTML body."""

    id: str
    title: str
    body: str


@dataclass
class ReportContext:
    """What every section builder receives.

    ``results``: :class:`~napari_invert.study.results.StudyResults`; ``summary``:
    :class:`~napari_invert.report.summary.EvaluationSummary`; ``tables``: by
    :attr:`Table.name` (``table1``, ``table2``, ``table3``, ``dice``, ``native``, ...);
    ``figures``: every figure drawn, each with its ``section`` tag.
    """

    results: Any
    summary: Any
    tables: dict[str, Table] = field(default_factory=dict)
    figures: list[FigureFile] = field(default_factory=list)

    def figures_of(self, section: str) -> list[FigureFile]:
        return [f for f in self.figures if f.section == section]


SectionBuilder = Callable[[ReportContext], "Section | None"]


def _lazy(module: str, name: str) -> SectionBuilder:
    """A builder imported on first use (section modules may import this one)."""

    def build(ctx: ReportContext) -> Section | None:
        return getattr(importlib.import_module(module), name)(ctx)

    build.__name__ = name
    build.__qualname__ = f"{module}.{name}"
    return build


_S = "napari_invert.report.sections"

#: The page, in order. Adding a section = a module with a builder + one line here.
SECTION_BUILDERS: list[SectionBuilder] = [
    _lazy(_S, "verdict_section"),
    _lazy("napari_invert.report.controls", "controls_section"),
    _lazy(_S, "definitions_section"),
    _lazy(_S, "tables_section"),
    _lazy(_S, "identification_section"),
    _lazy(_S, "membership_section"),
    _lazy("napari_invert.report.frontier", "frontier_section"),
    _lazy("napari_invert.report.native", "native_section"),
    _lazy(_S, "reconstructions_section"),
    _lazy("napari_invert.report.deformation", "deformation_section"),
    _lazy(_S, "similarity_section"),
    _lazy(_S, "ranks_section"),
    _lazy(_S, "prior_section"),
    _lazy("napari_invert.report.dice", "dice_section"),
    _lazy(_S, "training_section"),
    _lazy(_S, "notes_section"),
    _lazy(_S, "splits_section"),
    _lazy(_S, "config_section"),
    _lazy(_S, "references_section"),
    _lazy(_S, "files_section"),
]


def esc(text: Any) -> str:
    """HTML-escaped ``str(text)``."""
    return html.escape(str(text))


def image_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_html(fig: FigureFile) -> str:
    """``<figure>`` with the PNG embedded and its caption."""
    return (
        f'<figure><img alt="{esc(fig.title)}" src="{image_data_uri(fig.path)}">'
        f"<figcaption><b>{esc(fig.title)}.</b> {esc(fig.caption)} "
        f"<span style='color:#888'>({esc(fig.path.name)})</span></figcaption></figure>"
    )


def toc_html(sections: Sequence[Section]) -> str:
    """Table of contents: one link per section."""
    items = "".join(f'<li><a href="#{esc(s.id)}">{esc(s.title)}</a></li>' for s in sections)
    return f'<nav class="toc"><b>Contents</b><ol>{items}</ol></nav>'


def build_report(
    results: Any,
    summary: Any,
    tables: Sequence[Table],
    figures: Sequence[FigureFile],
    builders: Sequence[SectionBuilder] | None = None,
) -> str:
    """The full HTML text of ``report.html`` (``builders``: default :data:`SECTION_BUILDERS`)."""
    from napari_invert.report.sections import overview_html

    ctx = ReportContext(results, summary, {t.name: t for t in tables}, list(figures))
    sections = [s for s in (b(ctx) for b in (SECTION_BUILDERS if builders is None else builders)) if s]
    ids = [s.id for s in sections]
    if len(set(ids)) != len(ids):
        raise ValueError(f"report sections with the same id: {ids}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>napari-invert report — {esc(results.root.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Model-inversion audit: {esc(results.root.name)}</h1>",
        overview_html(ctx),
    ]
    parts += [
        # a warning's own line breaks (one line per victim) are kept
        f'<div class="warning"><b>Warning.</b> {esc(w).replace(chr(10), "<br>")}</div>'
        for w in getattr(summary, "warnings", [])
    ]
    parts.append(toc_html(sections))
    for s in sections:
        parts.append(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>\n{s.body}\n</section>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    path: str | Path, results: Any, summary: Any, tables: Sequence[Table], figures: Sequence[FigureFile]
) -> Path:
    """Write ``report.html`` atomically."""
    return write_text_atomic(path, build_report(results, summary, tables, figures))
