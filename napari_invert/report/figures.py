"""PNG figures of an evaluated study (matplotlib, headless).

Only :class:`matplotlib.figure.Figure` with the Agg canvas is used: ``pyplot`` is never
imported, so no display, GUI backend or global figure state is involved and the functions
are safe in worker threads, on clusters and under napari. Every file is written atomically
(:func:`napari_invert._io.atomic_path`).

Slices: volumes are ``(X, Y, Z)`` in RAS+ voxel order; an axial slice ``vol[:, :, z]`` is
shown transposed with ``origin="lower"``, so the subject's right is on the viewer's right
(neurological convention) and anterior is up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_invert._io import atomic_path
from napari_invert.study.layout import tap_from_slug
from napari_invert.threat_models import ARCH_NAMES

#: Default resolution of saved figures (dots per inch).
DPI = 110


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    """A new Agg-backed figure (no pyplot, no display).

    Margins are set by hand (``subplots_adjust``) in each function: matplotlib's
    constrained layout triples the drawing time, which adds up over dozens of figures.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def mid_axial_index(mask: np.ndarray | None, shape: Sequence[int]) -> int:
    """Axial slice through the middle of the mask's z extent (or of the volume)."""
    if mask is not None and np.any(mask):
        zs = np.nonzero(np.any(mask, axis=(0, 1)))[0]
        return int((zs[0] + zs[-1]) // 2)
    return int(shape[2] // 2)


def axial(volume: np.ndarray, z: int) -> np.ndarray:
    """The axial slice ``volume[:, :, z]`` transposed for ``imshow(origin="lower")``."""
    return np.asarray(volume)[:, :, z].T


def _display_range(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


@dataclass
class PanelImage:
    """One image of a figure row: a 2D slice with a column title and a caption below."""

    title: str
    image: np.ndarray
    caption: str = ""


@dataclass
class PanelRow:
    """One row of a reconstruction figure: a subject and the images shown for it."""

    label: str
    images: list[PanelImage] = field(default_factory=list)


def reconstruction_figure(path: str | Path, rows: Sequence[PanelRow], title: str) -> Path:
    """Figures 5-6 style grid: rows = subjects, columns = original and reconstructions.

    Each image gets its own display window (1st-99.5th percentile), as reconstructions may
    differ from the original by an intensity scaling. Captions carry the scores.
    """
    n_rows = max(1, len(rows))
    n_cols = max(1, max((len(r.images) for r in rows), default=1))
    height = 2.9 * n_rows + 0.9
    fig = _figure(2.6 * n_cols + 0.3, height)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    fig.subplots_adjust(
        left=0.3 / (2.6 * n_cols + 0.3),
        right=0.99,
        bottom=0.3 / height,
        top=1 - 0.9 / height,
        wspace=0.06,
        hspace=0.35,
    )
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            _no_ticks(ax)
            if j >= len(row.images):
                ax.set_axis_off()
                continue
            item = row.images[j]
            lo, hi = _display_range(item.image)
            ax.imshow(item.image, cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(item.title if i == 0 else item.title.split("\n")[0], fontsize=8)
            if item.caption:
                ax.set_xlabel(item.caption, fontsize=7)
            if j == 0:
                ax.set_ylabel(row.label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def deformation_figure(
    path: str | Path, items: Sequence[PanelImage], title: str, vmax: float | None = None
) -> Path:
    """Figure 7 style: deformation-magnitude slices (mm) side by side, one shared scale.

    Darker = smaller displacement, as in the paper.
    """
    n = max(1, len(items))
    fig = _figure(3.0 * n + 1.2, 3.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.subplots_adjust(left=0.03, right=0.85, bottom=0.1, top=0.82, wspace=0.08)
    if vmax is None:
        peaks = [float(np.nanmax(it.image)) for it in items if np.isfinite(it.image).any()]
        vmax = max(peaks) if peaks else 1.0
    vmax = vmax if vmax > 0 else 1.0
    im = None
    for ax, item in zip(axes, items):
        _no_ticks(ax)
        im = ax.imshow(item.image, cmap="gray", origin="lower", vmin=0.0, vmax=vmax, interpolation="nearest")
        ax.set_title(item.title, fontsize=8)
        if item.caption:
            ax.set_xlabel(item.caption, fontsize=7)
    if im is not None:
        cax = fig.add_axes((0.88, 0.15, 0.025, 0.62))
        fig.colorbar(im, cax=cax, label="displacement |u| (mm)")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


@dataclass
class MatrixPanel:
    """A similarity matrix (rows = reconstructions, columns = candidate originals)."""

    title: str
    matrix: np.ndarray
    row_ids: list[str]
    col_ids: list[str]
    higher_is_better: bool = True


def similarity_figure(path: str | Path, panels: Sequence[MatrixPanel], title: str) -> Path:
    """Heat maps of similarity matrices; the true pair of each row is outlined.

    The best candidate of each row (the attacker's guess) is marked with a dot; NaN entries
    (pairs not computed, e.g. sampled deformation) are left blank.
    """
    n = max(1, len(panels))
    fig = _figure(4.4 * n, 4.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.subplots_adjust(left=0.6 / (4.4 * n), right=0.98, bottom=0.17, top=0.86, wspace=0.35)
    for ax, panel in zip(axes, panels):
        m = np.asarray(panel.matrix, dtype=float)
        cmap = "viridis" if panel.higher_is_better else "viridis_r"
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8)
        # one artist for all outlines and one for all dots: a figure draws in a fraction of
        # the time of one patch and one line per row
        col_index = {c: k for k, c in enumerate(panel.col_ids)}
        true_cells = [(col_index[rid], r) for r, rid in enumerate(panel.row_ids) if rid in col_index]
        if true_cells:
            ax.add_collection(_outlines(true_cells))
        rows = [r for r in range(m.shape[0]) if np.isfinite(m[r]).any()]
        if rows:
            pick = np.nanargmax if panel.higher_is_better else np.nanargmin
            ax.scatter([int(pick(m[r])) for r in rows], rows, marker=".", color="white", s=9, linewidths=0)
        small = len(panel.col_ids) <= 40
        ax.set_xticks(range(len(panel.col_ids)) if small else [])
        ax.set_yticks(range(len(panel.row_ids)) if small else [])
        if small:
            ax.set_xticklabels(panel.col_ids, rotation=90, fontsize=5)
            ax.set_yticklabels(panel.row_ids, fontsize=5)
        ax.set_xlabel("candidate original")
        ax.set_ylabel("reconstruction")
        ax.set_title(panel.title, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _outlines(cells: Sequence[tuple[int, int]]):
    """Red outlines of the matrix cells ``(column, row)``, as one collection."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    boxes = [Rectangle((c - 0.5, r - 0.5), 1.0, 1.0) for c, r in cells]
    return PatchCollection(boxes, facecolor="none", edgecolor="red", linewidth=0.8)


def rank_histogram_figure(
    path: str | Path,
    ranks: Mapping[str, np.ndarray],
    n_candidates: int | Mapping[str, int],
    title: str,
    sampled: Sequence[str] = (),
) -> Path:
    """Histogram of the rank of the true original per metric (rank 1 = re-identified).

    ``n_candidates``: candidates per reconstruction, one number or one per panel label (a
    sampled deformation ranks among 1 + k only); the dotted line is the count expected by
    chance (uniform ranks) and each title gives the chance of a top-1. Panels whose label
    is in ``sampled`` say "sampled".
    """
    n = max(1, len(ranks))
    fig = _figure(3.2 * n, 3.3)
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.subplots_adjust(left=0.55 / (3.2 * n), right=0.98, bottom=0.16, top=0.72, wspace=0.35)
    for ax, (label, values) in zip(axes, ranks.items()):
        top = n_candidates if isinstance(n_candidates, int) else n_candidates.get(label, 1)
        top = max(1, int(top))
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        bins = np.arange(0.5, top + 1.5, 1.0)
        ax.hist(values, bins=bins, color="tab:blue", edgecolor="white")
        ax.axhline(len(values) / top, color="gray", linestyle=":", linewidth=1, label=f"chance (1/{top})")
        top1 = int(np.sum(values == 1))
        among = f"among {top} sampled" if label in sampled else f"among {top}"
        ax.set_title(f"{label}\ntop-1 {top1}/{len(values)} {among}, chance 1/{top}", fontsize=7)
        ax.set_xlabel("rank of true original")
        ax.set_ylabel("reconstructions")
        ax.set_xlim(0.5, top + 0.5)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def prior_gain_figure(
    path: str | Path, points: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str
) -> Path:
    """Score of the reconstruction vs score of the attacker's prior, per subject.

    ``points[label] = (prior_values, recon_values)``; points above the diagonal are
    reconstructions that say more about the subject than the attacker's mean image.
    """
    n = max(1, len(points))
    fig = _figure(3.4 * n, 3.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.subplots_adjust(left=0.85 / (3.4 * n), right=0.98, bottom=0.15, top=0.82, wspace=0.4)
    for ax, (label, (prior, recon)) in zip(axes, points.items()):
        prior = np.asarray(prior, dtype=float)
        recon = np.asarray(recon, dtype=float)
        ax.scatter(prior, recon, s=10)
        both = np.concatenate([prior, recon])
        both = both[np.isfinite(both)]
        if both.size:
            lo, hi = float(both.min()), float(both.max())
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="gray", linewidth=0.8)
        ax.set_xlabel("prior (attacker's mean image)")
        ax.set_ylabel("reconstruction")
        ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def training_curves_figure(
    path: str | Path, panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], title: str
) -> Path:
    """Loss against optimiser step. ``panels[panel_title][line_label] = (steps, losses)``."""
    n = max(1, len(panels))
    fig = _figure(4.4 * n, 3.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    fig.subplots_adjust(left=0.8 / (4.4 * n), right=0.98, bottom=0.15, top=0.84, wspace=0.3)
    for ax, (panel_title, lines) in zip(axes, panels.items()):
        positive = True
        for label, (steps, losses) in lines.items():
            ax.plot(steps, losses, linewidth=0.9, label=label)
            positive = positive and bool(np.all(np.asarray(losses) > 0))
        if positive and lines:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(panel_title, fontsize=8)
        if 0 < len(lines) <= 12:
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------
# all figures of an evaluated study
# ---------------------------------------------------------------------------------------
@dataclass
class FigureFile:
    """A written figure: where it is, its title, a caption and the report section it belongs to."""

    path: Path
    title: str
    caption: str
    section: str


_ARCH = ARCH_NAMES
_VARIANT = {"skull_stripped": ("Figure 5", "skull-stripped"), "full_head": ("Figure 6", "with skull")}


def _fmt(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.2f}"


def read_curve(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(steps, losses)`` from a training-curve CSV (columns step, loss, seconds), or None."""
    import csv

    if not path.is_file():
        return None
    steps, losses = [], []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                steps.append(float(row["step"]))
                losses.append(float(row["loss"]))
    except (KeyError, ValueError, TypeError, OSError):
        return None
    if not steps:
        return None
    return np.asarray(steps), np.asarray(losses)


def _panel_title(ev, metric: str, sampled_mode: bool) -> str:
    """Matrix panel title with its chance level (a sampled deformation: 1 / (1 + k))."""
    from napari_invert.report.tables import metric_label

    k = ev.candidates_per_row.get(metric, len(ev.candidate_ids))
    if metric == "deformation" and sampled_mode:
        return f"{metric_label(metric)}\n(true + {k - 1} sampled, chance 1/{k})"
    return f"{metric_label(metric)} (chance 1/{k})"


def make_figures(results, summary, variants_data: Mapping, log=None) -> list[FigureFile]:
    """Write every figure of an evaluation into ``evaluation/figures/`` and describe them.

    ``results``: :class:`~napari_invert.study.results.StudyResults`; ``summary``: the
    :class:`~napari_invert.report.summary.EvaluationSummary` being built;
    ``variants_data[variant]`` has ``candidate_ids``, ``originals`` and ``masks``. Paths
    come from :class:`~napari_invert.study.layout.EvaluationFolder`.
    """
    from napari_invert.report.dice import make_dice_figure
    from napari_invert.report.tables import higher_is_better, metric_label

    layout = results.folder.evaluation
    sampled_mode = summary.deformation_mode == "sample"
    figs: list[FigureFile] = []
    evaluations = list(summary.experiments)

    # -- Figures 5-6: original / reconstructions of the best, median and worst subject -------
    for variant, vd in variants_data.items():
        evs = [ev for ev in evaluations if ev.experiment.variant == variant]
        if not evs:
            continue
        rank_metric = next(
            (m for m in ("ssim_global", "ssim", "correlation") if m in evs[0].similarity), None
        )
        if rank_metric is None:
            continue
        scores: dict[str, list[float]] = {}
        for ev in evs:
            for sid, v in zip(ev.row_ids, ev.true_values(rank_metric)):
                scores.setdefault(sid, []).append(float(v))
        ordered = sorted(scores, key=lambda s: float(np.nanmean(scores[s])), reverse=True)
        picks = [("best", ordered[0]), ("median", ordered[len(ordered) // 2]), ("worst", ordered[-1])]
        seen: set[str] = set()
        rows = []
        for tag, sid in picks:
            if sid in seen:
                continue
            seen.add(sid)
            c = vd.candidate_ids.index(sid)
            z = mid_axial_index(vd.masks[c], vd.masks[c].shape)
            row = PanelRow(f"{tag}: {sid}", [PanelImage(f"original\n{variant}", axial(vd.originals[c], z))])
            for ev in evs:
                e = ev.experiment
                title = f"{_ARCH.get(e.arch, e.arch)}\n{e.tap}"
                if sid not in ev.row_ids:
                    row.images.append(
                        PanelImage(title, np.zeros_like(axial(vd.originals[c], z)), "no reconstruction")
                    )
                    continue
                i = ev.row_ids.index(sid)
                parts = []
                for m, short in (("ssim_global", "SSIMg"), ("ssim", "SSIMw"), ("correlation", "MCC")):
                    if m in ev.similarity:
                        parts.append(f"{short} {_fmt(ev.true_values(m)[i])}")
                recon = results.recon(e, sid)
                row.images.append(PanelImage(title, axial(recon, z), " ".join(parts)))
            rows.append(row)
        number, words = _VARIANT.get(variant, ("Figures 5-6", variant))
        path = reconstruction_figure(
            layout.figure(f"reconstructions_{variant}"),
            rows,
            f"{number} style ({words}): mid-axial slices, "
            f"best / median / worst by {metric_label(rank_metric)}",
        )
        figs.append(
            FigureFile(
                path,
                f"{number} style — {words}",
                "Original and reconstructions of the best, median and worst subject (ranked by "
                f"{metric_label(rank_metric)} averaged over experiments). SSIMg = global masked "
                "SSIM (paper's), SSIMw = windowed SSIM, MCC = Pearson r.",
                "reconstructions",
            )
        )

    for ev in evaluations:
        e = ev.experiment
        key = f"{e.variant}_{e.arch}_{e.tap.replace('+', '_')}"
        label = e.label
        # -- Figure 7: deformation magnitude, good vs bad reconstruction ----------------------
        if "deformation" in ev.similarity:
            true = ev.true_values("deformation")
            if np.isfinite(true).any():
                order = np.argsort(np.where(np.isfinite(true), true, np.inf))
                items = []
                for tag, i in (("good", int(order[0])), ("bad", int(order[np.isfinite(true).sum() - 1]))):
                    sid = ev.row_ids[i]
                    mp = layout.deformation_map(e.variant, e.arch, e.tap, sid)
                    if not mp.is_file():
                        continue
                    import nibabel as nib

                    mag = np.asarray(nib.load(str(mp)).dataobj, dtype=np.float32)
                    c = variants_data[e.variant].candidate_ids.index(sid)
                    z = mid_axial_index(variants_data[e.variant].masks[c], mag.shape)
                    items.append(
                        PanelImage(
                            f"{tag} reconstruction: {sid}",
                            axial(mag, z),
                            f"mean |u| {true[i]:.2f} mm, rank {ev.ranks['deformation'][i]} of "
                            f"{ev.candidates_per_row['deformation']} (chance 1/"
                            f"{ev.candidates_per_row['deformation']})",
                        )
                    )
                    if len(ev.row_ids) == 1:
                        break
                if items:
                    path = deformation_figure(
                        layout.figure(f"deformation_{key}"),
                        items,
                        f"Figure 7 style: deformation magnitude — {label}",
                    )
                    figs.append(
                        FigureFile(
                            path,
                            f"Figure 7 style — {label}",
                            "Magnitude of the displacement (mm) registering the reconstruction onto "
                            "its true original; darker = smaller.",
                            "deformation",
                        )
                    )

        # -- similarity heat maps -------------------------------------------------------------
        panels = [
            MatrixPanel(
                _panel_title(ev, m, sampled_mode),
                ev.similarity[m],
                ev.row_ids,
                ev.candidate_ids,
                higher_is_better(m),
            )
            for m in ev.similarity
        ]
        if panels:
            path = similarity_figure(
                layout.figure(f"similarity_{key}"), panels, f"Similarity matrices — {label}"
            )
            figs.append(
                FigureFile(
                    path,
                    f"Similarity — {label}",
                    "Rows: reconstructions; columns: candidate originals. Red box: true pair; "
                    "white dot: the attacker's best guess.",
                    "similarity",
                )
            )
            ranks = {metric_label(m): ev.ranks[m] for m in ev.ranks}
            per_panel = {
                metric_label(m): ev.candidates_per_row.get(m, len(ev.candidate_ids)) for m in ev.ranks
            }
            path = rank_histogram_figure(
                layout.figure(f"ranks_{key}"),
                ranks,
                per_panel,
                f"Rank of the true original — {label}",
                sampled=[metric_label("deformation")] if sampled_mode else [],
            )
            figs.append(
                FigureFile(
                    path,
                    f"Ranks — {label}",
                    "Rank 1 = the reconstruction is closest to its own original (re-identified). "
                    "Dotted line: the count expected by chance; each panel gives its chance level "
                    "(1 / candidates per reconstruction; a sampled deformation ranks among 1 + k only).",
                    "ranks",
                )
            )
            points = {metric_label(m): (ev.prior_values[m], ev.true_values(m)) for m in ev.similarity}
            path = prior_gain_figure(
                layout.figure(f"prior_{key}"), points, f"Reconstruction vs prior — {label}"
            )
            figs.append(
                FigureFile(
                    path,
                    f"Prior-relative leakage — {label}",
                    "Each point is a subject: score of the prior (attacker's mean image) vs score "
                    "of the reconstruction against the true original (for the deformation, lower "
                    "is better).",
                    "prior",
                )
            )
        if log:
            log(f"figures: {label}")

    # -- training curves ------------------------------------------------------------------------
    folder = results.folder
    for variant in variants_data:
        seg_lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        dec_lines: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for fold in sorted(int(f["fold"]) for f in results.splits["folds"]):
            fold_dir = folder.fold_dir(variant, fold)
            if not fold_dir.is_dir():
                continue
            for arch_dir in sorted(p for p in fold_dir.iterdir() if p.is_dir()):
                arch = arch_dir.name
                curve = read_curve(folder.segmenter_curve(variant, fold, arch))
                if curve is not None:
                    seg_lines[f"fold{fold} {_ARCH.get(arch, arch)}"] = curve
                for tap_dir in sorted(p for p in arch_dir.iterdir() if p.is_dir()):
                    tap = tap_from_slug(tap_dir.name)
                    curve = read_curve(folder.decoder_curve(variant, fold, arch, tap))
                    if curve is not None:
                        dec_lines[f"fold{fold} {_ARCH.get(arch, arch)} {tap}"] = curve
        panels_c = {
            k: v
            for k, v in (("victim segmenter (Dice + CE)", seg_lines), ("inversion decoder", dec_lines))
            if v
        }
        if panels_c:
            path = training_curves_figure(
                layout.figure(f"training_{variant}"), panels_c, f"Training curves — {variant}"
            )
            figs.append(
                FigureFile(
                    path,
                    f"Training curves — {variant}",
                    "Loss per optimiser step of each fold's victim segmenter and inversion decoders.",
                    "training",
                )
            )

    dice = make_dice_figure(results, summary)
    if dice is not None:
        figs.append(dice)
    return figs
