"""Dice (paper Section 4.2.3): the victim on originals and on reconstructions.

* :func:`compute_dice`: each fold's own trained victim segments its private (training)
  and attack (unseen) originals, every private reconstruction and the fold's prior; rows
  of ``tables/dice_per_subject.csv`` (:class:`DiceRow`).
* the victims against a trivial predictor and the "barely segments" banner live in
  :mod:`napari_invert.report.dice_baseline` (re-exported here);
* :func:`dice_table`, :func:`dice_figure` and the report section :func:`dice_section`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert._io import write_text_atomic
from napari_invert.report import paper
from napari_invert.report.dice_baseline import (  # re-exported: report.dice is where they used to live
    DiceBaseline,
)
from napari_invert.report.tables import (
    _ARCH_ORDER,
    _TAP_ORDER,
    _VARIANT_ORDER,
    MetricRow,
    Table,
    _num,
    _position,
    experiment_order,
    fmt_mean_sd,
    gain_of,
    mean_sd,
)
from napari_invert.study.results import Experiment, StudyResults
from napari_invert.threat_models import ARCH_NAMES

if TYPE_CHECKING:
    from napari_invert.report.html import ReportContext, Section
    from napari_invert.report.summary import ExperimentEvaluation, Log

_ARCH = ARCH_NAMES


@dataclass
class DiceRow:
    """One line of ``dice.csv``.

    ``input``: which image was segmented (``original``, ``reconstruction`` or ``prior``);
    ``reference``: ``manual`` labels or ``original_segmentation`` (the same network's
    segmentation of the original); ``role``: ``private`` (the segmenter trained on this
    subject) or ``attack`` (unseen by the segmenter); ``tap`` is empty for rows that do not
    depend on the attack.
    """

    variant: str
    fold: int
    arch: str
    tap: str
    subject_id: str
    role: str
    input: str
    reference: str
    dice: float


DICE_CSV_COLUMNS: tuple[str, ...] = (
    "variant",
    "fold",
    "arch",
    "tap",
    "subject_id",
    "role",
    "input",
    "reference",
    "dice",
)


def write_dice_csv(path: str | Path, rows: Iterable[DiceRow]) -> Path:
    """Write ``dice.csv`` atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(DICE_CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [r.variant, r.fold, r.arch, r.tap, r.subject_id, r.role, r.input, r.reference, _num(r.dice)]
        )
    return write_text_atomic(path, buf.getvalue())


def dice_order(r: DiceRow) -> tuple:
    """Sort key of Dice rows: experiment order, then fold, subject, input, reference."""
    return (
        experiment_order(Experiment(r.variant, r.arch, r.tap)),
        r.fold,
        r.subject_id,
        r.input,
        r.reference,
    )


def _n_classes(results: StudyResults, meta: dict[str, Any], labels: list[np.ndarray]) -> int:
    for source in (meta, results.cohort):
        n = source.get("n_classes") if isinstance(source, dict) else None
        if isinstance(n, int) and n >= 2:
            return n
    return int(max(int(a.max()) for a in labels)) + 1


def compute_dice(
    results: StudyResults,
    evaluations: list[ExperimentEvaluation],
    variants: Mapping[str, Any],
    device: Any,
    log: Log,
) -> tuple[list[DiceRow], list[MetricRow], str | None]:
    """Paper Section 4.2.3: re-segment reconstructions with the fold's own trained victim."""
    from napari_invert.checkpoint import checkpoint_exists

    folder = results.folder
    rows: list[DiceRow] = []
    mrows: list[MetricRow] = []
    missing_ckpt: list[str] = []
    missing_labels: set[str] = set()
    label_cache: dict[str, dict[str, np.ndarray | None]] = {}
    splits = {int(f["fold"]): f for f in results.splits["folds"]}
    jobs = sorted({(e.experiment.variant, f, e.experiment.arch) for e in evaluations for f in e.row_folds})
    for variant, fold, arch in jobs:
        stem = folder.segmenter_stem(variant, fold, arch)
        victim = None
        if not checkpoint_exists(stem):
            from napari_invert.audit.victims import audit_victim

            victim = audit_victim(folder.root, arch, device)  # an audit: the user's own model
            if victim is None:
                missing_ckpt.append(str(stem.relative_to(folder.root)) + ".safetensors")
                continue
        vd = variants[variant]
        if variant not in label_cache:
            label_cache[variant] = {s: results.labels(variant, s) for s in vd.candidate_ids}
        labels = label_cache[variant]
        if any(v is None for v in labels.values()):
            missing_labels.add(variant)
            continue
        from napari_invert.models import load_segmenter

        model, meta = victim or load_segmenter(stem, device)
        n_classes = _n_classes(results, meta if isinstance(meta, dict) else {}, list(labels.values()))
        private = set(splits[fold]["private"])
        fold_ids = list(splits[fold]["private"]) + list(splits[fold]["attack"])
        # every image this victim segments, in one batched pass: the fold's originals,
        # the attacker's prior, then each experiment's reconstructions of the fold
        recon_keys = [
            (ev, sid)
            for ev in evaluations
            if ev.experiment.variant == variant and ev.experiment.arch == arch
            for sid, f in zip(ev.row_ids, ev.row_folds)
            if f == fold
        ]
        fixed = [vd.originals[vd.index(sid)] for sid in fold_ids] + [vd.priors[vd.prior_index(fold)]]
        *fixed_segs, seg_prior = _segment_many(model, fixed, device)
        seg_orig = dict(zip(fold_ids, fixed_segs))
        recon_segs = _segment_many(
            model, (results.recon(ev.experiment, sid) for ev, sid in recon_keys), device
        )
        for sid in fold_ids:
            role = "private" if sid in private else "attack"
            dice = _mean_dice(seg_orig[sid], labels[sid], n_classes)
            rows.append(DiceRow(variant, fold, arch, "", sid, role, "original", "manual", dice))
        for (ev, sid), seg in zip(recon_keys, recon_segs):
            e = ev.experiment
            refs = {"manual": labels[sid], "original_segmentation": seg_orig[sid]}
            for reference, metric in (("manual", "dice"), ("original_segmentation", "dice_seg")):
                value = _mean_dice(seg, refs[reference], n_classes)
                prior_value = _mean_dice(seg_prior, refs[reference], n_classes)
                rows.append(
                    DiceRow(variant, fold, arch, e.tap, sid, "private", "reconstruction", reference, value)
                )
                rows.append(
                    DiceRow(variant, fold, arch, e.tap, sid, "private", "prior", reference, prior_value)
                )
                gain = gain_of(metric, value, prior_value)
                mrows.append(
                    MetricRow(sid, fold, variant, arch, e.tap, metric, value, prior_value, gain, None)
                )
        log(f"Dice: {variant} fold {fold} {arch} done")
        del model
    reasons = []
    if missing_ckpt:
        reasons.append(
            f"no segmenter checkpoint for {len(missing_ckpt)} of {len(jobs)} victim(s) "
            f"(e.g. {missing_ckpt[0]})"
        )
    if missing_labels:
        reasons.append(f"no manual labels for variant(s) {sorted(missing_labels)} (data/<variant>/labels)")
    reason = "; ".join(reasons) if reasons else None
    if not rows and reason is None:
        reason = "no reconstruction to segment"
    return rows, mrows, reason


def _segment_many(model: Any, images: Iterable[np.ndarray], device: Any) -> Iterator[np.ndarray]:
    """Label maps of ``images`` (consumed lazily) by ``model``: batched for a study's own
    victim, one at a time through an audit's ``ModelAdapter`` (it may slide a window)."""
    from napari_invert.models import predict_many

    if callable(getattr(model, "segment", None)):  # an audit's ModelAdapter (sliding window if patch-trained)
        return (np.asarray(model.segment(np.asarray(im, dtype=np.float32))) for im in images)
    return predict_many(model, images, device)


def _mean_dice(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> float:
    from napari_invert.metrics import mean_dice

    return float(mean_dice(pred, ref, n_classes))


def dice_table(rows: Sequence[DiceRow], baselines: Sequence[DiceBaseline] = ()) -> Table:
    """Dice (paper Section 4.2.3): the victim on its own and on unseen subjects, the trivial
    predictor on the unseen subjects, and the reconstructions (vs manual labels and vs the
    segmentation of the original)."""
    base = {(b.variant, b.arch): b for b in baselines}
    archs = sorted(
        {(r.variant, r.arch) for r in rows},
        key=lambda va: (_position(va[0], _VARIANT_ORDER), _position(va[1], _ARCH_ORDER)),
    )
    columns = [
        "Variant",
        "Arch",
        "Tap",
        "segmenter: private originals",
        "segmenter: unseen originals",
        "trivial predictor: unseen",
        "reconstruction vs manual",
        "reconstruction vs original's seg.",
        "prior vs manual",
        "Paper original",
        "Paper reconstruction",
    ]
    csv_columns = [
        "variant",
        "arch",
        "tap",
        "private_mean",
        "private_sd",
        "private_n",
        "unseen_mean",
        "unseen_sd",
        "unseen_n",
        "baseline_unseen_mean",
        "baseline_unseen_sd",
        "recon_manual_mean",
        "recon_manual_sd",
        "recon_manual_n",
        "recon_seg_mean",
        "recon_seg_sd",
        "recon_seg_n",
        "prior_manual_mean",
        "prior_manual_sd",
        "paper_original_mean",
        "paper_original_sd",
        "paper_recon_mean",
        "paper_recon_sd",
    ]
    out_rows, out_csv = [], []
    for variant, arch in archs:
        mine = [r for r in rows if r.variant == variant and r.arch == arch]
        own_p = mean_sd(r.dice for r in mine if r.input == "original" and r.role == "private")
        own_a = mean_sd(r.dice for r in mine if r.input == "original" and r.role == "attack")
        taps = sorted({r.tap for r in mine if r.tap}, key=lambda t: _position(t, _TAP_ORDER))
        p = paper.DICE.get(arch) if variant == "skull_stripped" else None
        b = base.get((variant, arch))
        for tap in taps or [""]:
            rm = mean_sd(
                r.dice
                for r in mine
                if r.tap == tap and r.input == "reconstruction" and r.reference == "manual"
            )
            rs = mean_sd(
                r.dice
                for r in mine
                if r.tap == tap and r.input == "reconstruction" and r.reference == "original_segmentation"
            )
            pr = mean_sd(
                r.dice for r in mine if r.tap == tap and r.input == "prior" and r.reference == "manual"
            )
            out_rows.append(
                [
                    variant,
                    arch,
                    tap or "–",
                    fmt_mean_sd(*own_p[:2]),
                    fmt_mean_sd(*own_a[:2]),
                    fmt_mean_sd(b.baseline_unseen, b.baseline_sd) if b else "–",
                    fmt_mean_sd(*rm[:2]),
                    fmt_mean_sd(*rs[:2]),
                    fmt_mean_sd(*pr[:2]),
                    paper.fmt(p["original"] if p else None),
                    paper.fmt(p["reconstruction"] if p else None),
                ]
            )
            out_csv.append(
                [
                    variant,
                    arch,
                    tap,
                    *own_p,
                    *own_a,
                    *((b.baseline_unseen, b.baseline_sd) if b else ("", "")),
                    *rm,
                    *rs,
                    *pr[:2],
                    *(p["original"] if p else ("", "")),
                    *(p["reconstruction"] if p else ("", "")),
                ]
            )
    notes = [
        "Dice = mean over foreground classes of the segmentation by the fold's own trained victim.",
        "'private originals': the victim's Dice on the subjects it was trained on; 'unseen originals': "
        "on the fold's attack subjects, which it never saw (a real segmenter scores well on both).",
        "'trivial predictor': the majority label of the victim's training labels at each voxel, "
        "whatever the image, scored on the same unseen subjects. A victim near this baseline has "
        "learnt little beyond where structures usually are.",
        "Paper (Section 4.2.3, skull-stripped): Dice of the segmentation of originals and of "
        "reconstructions vs the manual labels.",
    ]
    return Table(
        "dice",
        "Dice — the victim segmenter on originals and on reconstructions",
        columns,
        out_rows,
        csv_columns,
        out_csv,
        notes,
    )


# ---------------------------------------------------------------------------------------
# figure and report section
# ---------------------------------------------------------------------------------------
#: Panels per row of the Dice figure (keeps it readable at page width).
DICE_FIGURE_COLUMNS = 2


def dice_figure(
    path: str | Path,
    panels: Mapping[str, Mapping[str, np.ndarray]],
    title: str,
    baselines: Mapping[str, float] | None = None,
) -> Path:
    """Box plots of per-subject Dice, one panel per victim, wrapped into rows.

    ``panels[panel_title][box_label] = values``; ``baselines[panel_title]``: the trivial
    predictor's mean Dice on unseen subjects, drawn as a dashed line.
    """
    from napari_invert.report.figures import _figure, save_figure

    names = list(panels) or ["no Dice"]
    ncols = min(DICE_FIGURE_COLUMNS, len(names))
    nrows = -(-len(names) // ncols)
    width, row_h = 5.6 * ncols, 3.6
    fig = _figure(width, row_h * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    height = row_h * nrows + 0.6
    fig.subplots_adjust(
        left=0.7 / width, right=0.99, bottom=1.1 / height, top=1 - 0.75 / height, wspace=0.18, hspace=0.62
    )
    for k, ax in enumerate(axes.ravel()):
        if k >= len(names) or names[k] not in panels:
            ax.set_axis_off()
            continue
        name = names[k]
        groups = panels[name]
        labels = list(groups)
        data = [
            np.asarray(groups[g], dtype=float)[np.isfinite(np.asarray(groups[g], dtype=float))]
            for g in labels
        ]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        base = (baselines or {}).get(name)
        if base is not None and np.isfinite(base):
            ax.axhline(
                base, color="tab:red", linestyle="--", linewidth=1, label=f"trivial predictor {base:.2f}"
            )
            ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean Dice", fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def dice_panels(rows: Sequence[DiceRow]) -> dict[str, dict[str, list[float]]]:
    """Per victim (``U-Net skull_stripped``): box label -> per-subject Dice vs manual labels."""
    panels: dict[str, dict[str, list[float]]] = {}
    taps = sorted({r.tap for r in rows if r.tap}, key=lambda t: _position(t, _TAP_ORDER))
    order = ["trained-on originals", "unseen originals", *[f"recon {t}" for t in taps], "prior"]
    ordered = sorted(
        rows, key=lambda r: (experiment_order(Experiment(r.variant, r.arch, "")), r.fold, r.subject_id)
    )
    for r in ordered:
        if r.reference != "manual":
            continue
        panel = f"{_ARCH.get(r.arch, r.arch)} {r.variant}"
        if r.input == "original":
            box = "trained-on originals" if r.role == "private" else "unseen originals"
        elif r.input == "reconstruction":
            box = f"recon {r.tap}"
        else:
            box = "prior"
        panels.setdefault(panel, {}).setdefault(box, []).append(r.dice)
    return {k: {b: v[b] for b in order if b in v} for k, v in panels.items()}


def make_dice_figure(results: StudyResults, summary: Any) -> Any:
    """Draw ``figures/dice.png`` from the summary's Dice rows (``None`` without rows)."""
    from napari_invert.report.figures import FigureFile

    if not summary.dice_rows:
        return None
    base = {f"{_ARCH.get(b.arch, b.arch)} {b.variant}": b.baseline_unseen for b in summary.dice_baseline}
    panels = {
        k: {g: np.asarray(v) for g, v in groups.items()}
        for k, groups in dice_panels(summary.dice_rows).items()
    }
    path = dice_figure(
        results.folder.evaluation.figure("dice"),
        panels,
        "Dice vs manual labels (victim segmenter of each fold)",
        base,
    )
    return FigureFile(
        path,
        "Dice",
        "Segmentation by the fold's own victim: the subjects it was trained on, unseen subjects, "
        "reconstructions and the prior. Dashed red line: a trivial predictor that ignores the image "
        "(majority label of the victim's training labels at each voxel) on the unseen subjects.",
        "dice",
    )


def dice_section(ctx: ReportContext) -> Section | None:
    """Report section: the Dice table, the trivial baseline and the figure."""
    from napari_invert.report.html import Section, figure_html

    table = ctx.tables.get("dice")
    figs = [f for f in ctx.figures if f.section == "dice"]
    if table is None and not figs:
        return None
    parts = [table.to_html()] if table is not None else []
    parts += [figure_html(f) for f in figs]
    return Section("dice", "Dice: does the victim segment, and its reconstructions?", "\n".join(parts))
