"""The controls that say what a feature-inversion result means.

Threat model of every number here: **feature inversion** (the attacker reads the encoder's
outputs for a scan). For each experiment (variant, victim, tap) :func:`evaluate_controls`
scores and ranks reconstructions against every candidate original, for

* **members** (reconstructions of each subject from the fold where it trained the victim) and
  **non-members** (from a fold where it was held out from victim and attacker alike). Feature
  inversion needs the scan, not the training set: a member-minus-non-member difference near
  zero says the reconstruction does not depend on membership. The difference is paired by
  subject (bootstrap interval, sign-flip p-value; :mod:`napari_invert.identify.paired`).
* the **untrained victim** (``<arch>@untrained``, the same architecture at initialisation,
  attacked the same way): the share of the result that survives without any training.
* **re-identification baselines** (:mod:`napari_invert.identify.baselines`): the brain-mask
  shape alone, the attacker's mean image, and the same score computed inside one mask common
  to all candidates (so the outline alone cannot identify).

Files (in ``out_dir``, normally ``STUDY/evaluation/controls/``): ``controls.json`` (summary
rows, verdict lines, settings), ``per_subject.csv`` and ``controls.md``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert.identify.baselines import common_mask, mask_shape_similarity
from napari_invert.identify.intervals import difference_interval
from napari_invert.identify.paired import paired_difference_interval
from napari_invert.identify.reid import rank_true
from napari_invert.study.results import StudyResults
from napari_invert.tap_names import beyond_paper
from napari_invert.threat_models import ARCH_NAMES, FEATURE_INVERSION, ArchKey

ROLES = ("member", "nonmember")
_ARCH_LABEL = ARCH_NAMES


@dataclass
class SubjectRow:
    """One reconstruction, scored (``metric``) and ranked among all candidates (1 = identified)."""

    variant: str
    arch: str
    condition: str
    tap: str
    role: str
    subject_id: str
    fold: int
    score: float
    prior_score: float
    rank: int
    rank_common_mask: int | None = None
    rank_mask_shape: int | None = None
    rank_mean_image: int | None = None


@dataclass
class ControlSummary:
    """Summary of one experiment: members, non-members, their paired difference, baselines."""

    variant: str
    arch: str
    condition: str
    tap: str
    metric: str
    n_candidates: int
    beyond_paper: bool
    threat_model: str = FEATURE_INVERSION
    members: dict[str, Any] = field(default_factory=dict)
    nonmembers: dict[str, Any] = field(default_factory=dict)
    member_minus_nonmember: dict[str, Any] | None = None
    baselines: dict[str, Any] = field(default_factory=dict)
    untrained_over_trained: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        victim = _ARCH_LABEL.get(self.arch, self.arch)
        if self.condition != "trained":
            victim += f" ({self.condition})"
        return f"{victim} {self.tap} ({self.variant})"


def _group(rows: list[SubjectRow]) -> dict[str, Any]:
    if not rows:
        return {"n": 0}
    ranks = np.array([r.rank for r in rows])
    scores = np.array([r.score for r in rows])
    gains = scores - np.array([r.prior_score for r in rows])
    return {
        "n": len(rows),
        "top1": int((ranks == 1).sum()),
        "mean_rank": float(ranks.mean()),
        "mean_score": float(scores.mean()),
        "mean_gain_over_prior": float(gains.mean()),
    }


def _top1(rows: list[SubjectRow], attr: str) -> int | None:
    values = [getattr(r, attr) for r in rows]
    if not values or any(v is None for v in values):
        return None
    return int(sum(v == 1 for v in values))


def evaluate_controls(
    study_dir: str | Path,
    out_dir: str | Path | None = None,
    metric: str | None = None,
    device: Any = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compute the controls of a study folder and write them to ``out_dir``.

    Parameters
    ----------
    study_dir
        A study folder.
    out_dir
        Where to write; default ``STUDY/evaluation/controls``.
    metric
        Similarity used for scores and ranks: ``ssim`` (windowed), ``correlation`` or
        ``ssim_global``; default the config's ``evaluation.identification_metric``.
    device
        Torch device for the similarity matrices (default: the config's).

    Returns
    -------
    The ``controls.json`` document: ``{"threat_model", "metric", "summaries": [...],
    "verdicts": [...], "roles": [...]}``.
    """
    from napari_invert.config import load_config
    from napari_invert.report.evaluate import similarity_matrix

    results = StudyResults(study_dir)
    config = load_config(results.folder.config_path)
    metric = metric or config.evaluation.identification_metric
    out = Path(out_dir) if out_dir is not None else results.folder.evaluation_dir / "controls"
    say = log or (lambda _msg: None)
    device = device if device is not None else (None if config.device == "auto" else config.device)
    folds = results.splits["folds"]
    fold_of = {role: {} for role in ROLES}
    for f in folds:
        for sid in f["private"]:
            fold_of["member"][sid] = int(f["fold"])
        for sid in f.get("holdout", []):
            fold_of["nonmember"][sid] = int(f["fold"])
    roles = [r for r in ROLES if fold_of[r]]
    validated = _validation_subjects(results)

    rows: list[SubjectRow] = []
    summaries: list[ControlSummary] = []
    for variant in results.variants:
        experiments = [e for e in results.experiments() if e.variant == variant]
        if not experiments:
            continue
        ids = results.subject_ids
        index = {s: i for i, s in enumerate(ids)}
        originals = results.stack_originals(variant, ids)
        masks = results.stack_masks(variant, ids)
        data_range = float(originals.max() - originals.min()) or 1.0
        shared = np.broadcast_to(common_mask(masks), masks.shape)
        prior_folds = sorted(
            int(f["fold"]) for f in folds if results.folder.prior(variant, int(f["fold"])).is_file()
        )
        priors = np.stack([results.prior(variant, k) for k in prior_folds])
        prior_sim = similarity_matrix(metric, priors, originals, masks, data_range, device)
        prior_row = {k: i for i, k in enumerate(prior_folds)}
        for exp in experiments:
            key = ArchKey.parse(exp.arch)
            by_role: dict[str, list[SubjectRow]] = {}
            for role in roles:
                sids = [
                    s
                    for s in ids
                    if s in fold_of[role]
                    and fold_of[role][s] in prior_row
                    and results.recon_path(exp, s, fold_of[role][s]).is_file()
                    and (role != "member" or s not in validated(variant, fold_of[role][s], key.arch))
                ]
                if not sids:
                    continue
                recon_folds = [fold_of[role][s] for s in sids]
                recons = np.stack([results.recon(exp, s, f) for s, f in zip(sids, recon_folds)])
                truth = np.array([index[s] for s in sids])
                sim = similarity_matrix(metric, recons, originals, masks, data_range, device)
                ranks = rank_true(sim, truth)
                prior_ranks = rank_true(prior_sim[[prior_row[f] for f in recon_folds]], truth)
                extra: dict[str, np.ndarray] = {}
                if role == "member" and config.controls.reid_baselines:
                    extra["rank_common_mask"] = rank_true(
                        similarity_matrix(metric, recons, originals, shared, data_range, device), truth
                    )
                    extra["rank_mask_shape"] = rank_true(mask_shape_similarity(recons, masks), truth)
                group = []
                for i, (sid, f) in enumerate(zip(sids, recon_folds)):
                    group.append(
                        SubjectRow(
                            variant,
                            key.arch,
                            key.condition or "trained",
                            exp.tap,
                            role,
                            sid,
                            f,
                            float(sim[i, truth[i]]),
                            float(prior_sim[prior_row[f], truth[i]]),
                            int(ranks[i]),
                            *(
                                int(extra[k][i]) if k in extra else None
                                for k in ("rank_common_mask", "rank_mask_shape")
                            ),
                            int(prior_ranks[i]),
                        )
                    )
                by_role[role] = group
                rows.extend(group)
            if not by_role:
                continue
            summary = ControlSummary(
                variant,
                key.arch,
                key.condition or "trained",
                exp.tap,
                metric,
                len(ids),
                beyond_paper(exp.tap),
                members=_group(by_role.get("member", [])),
                nonmembers=_group(by_role.get("nonmember", [])),
            )
            member_rows = by_role.get("member", [])
            summary.baselines = {
                "common_mask_top1": _top1(member_rows, "rank_common_mask"),
                "mask_shape_top1": _top1(member_rows, "rank_mask_shape"),
                "mean_image_top1": _top1(member_rows, "rank_mean_image"),
                "chance_top1": len(member_rows) / len(ids) if member_rows else None,
            }
            pairs = _pairs(by_role)
            members, nonmembers = by_role.get("member", []), by_role.get("nonmember", [])
            if pairs:  # each subject as member and as non-member: paired by subject
                a = np.array([m.score for m, _ in pairs])
                b = np.array([n.score for _, n in pairs])
                diff = paired_difference_interval(a, b).to_dict()
                top = paired_difference_interval(
                    [float(m.rank == 1) for m, _ in pairs], [float(n.rank == 1) for _, n in pairs]
                ).to_dict()
                summary.member_minus_nonmember = {
                    "paired": True,
                    "n_pairs": len(pairs),
                    "score": diff,
                    "top1_rate": top,
                }
            elif len(members) > 1 and len(nonmembers) > 1:  # e.g. one fold run: different subjects
                diff = difference_interval(
                    [m.score for m in members], [n.score for n in nonmembers]
                ).to_dict()
                top = difference_interval(
                    [float(m.rank == 1) for m in members], [float(n.rank == 1) for n in nonmembers]
                ).to_dict()
                summary.member_minus_nonmember = {
                    "paired": False,
                    "n_pairs": 0,
                    "score": diff,
                    "top1_rate": top,
                }
            summaries.append(summary)
            say(f"controls: {summary.label}: {_group_text(summary.members)}")
    _attach_untrained(summaries)
    verdicts = control_verdicts(summaries)
    doc = {
        "threat_model": FEATURE_INVERSION,
        "metric": metric,
        "roles": roles,
        "summaries": [{**asdict(s), "label": s.label} for s in summaries],
        "verdicts": verdicts,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "controls.json", doc)
    write_text_atomic(out / "per_subject.csv", _rows_csv(rows))
    write_text_atomic(out / "controls.md", controls_markdown(doc))
    return doc


def _validation_subjects(results: StudyResults) -> Callable[[str, int, str], frozenset[str]]:
    """``(variant, fold, arch) -> ids`` the victim held out to judge convergence (``validated_on`` in
    its segmenter's JSON): it never took a gradient step on them, so they are no members."""
    from napari_invert._io import read_json

    cache: dict[tuple[str, int, str], frozenset[str]] = {}

    def lookup(variant: str, fold: int, arch: str) -> frozenset[str]:
        if (variant, fold, arch) not in cache:
            path = results.folder.segmenter_stem(variant, fold, arch).with_suffix(".json")
            ids = read_json(path).get("validated_on", []) if path.is_file() else []
            cache[(variant, fold, arch)] = frozenset(ids)
        return cache[(variant, fold, arch)]

    return lookup


def _pairs(by_role: dict[str, list[SubjectRow]]) -> list[tuple[SubjectRow, SubjectRow]]:
    nonmember = {r.subject_id: r for r in by_role.get("nonmember", [])}
    return [(m, nonmember[m.subject_id]) for m in by_role.get("member", []) if m.subject_id in nonmember]


def _attach_untrained(summaries: list[ControlSummary]) -> None:
    trained = {(s.variant, s.arch, s.tap): s for s in summaries if s.condition == "trained"}
    for s in summaries:
        if s.condition != "untrained" or (s.variant, s.arch, s.tap) not in trained:
            continue
        t = trained[(s.variant, s.arch, s.tap)]
        if not t.members.get("n") or not s.members.get("n"):
            continue
        ratio = {
            "top1_trained": t.members["top1"],
            "top1_untrained": s.members["top1"],
            "score_trained": t.members["mean_score"],
            "score_untrained": s.members["mean_score"],
            "gain_trained": t.members["mean_gain_over_prior"],
            "gain_untrained": s.members["mean_gain_over_prior"],
        }
        t.untrained_over_trained = ratio
        s.untrained_over_trained = ratio


def _group_text(g: dict[str, Any]) -> str:
    if not g.get("n"):
        return "none"
    gain = g["mean_gain_over_prior"]
    return f"top-1 {g['top1']}/{g['n']}, mean score {g['mean_score']:.3f} (gain over prior {gain:+.3f})"


def control_verdicts(summaries: list[ControlSummary]) -> list[str]:
    """Plain sentences, each naming its threat model and its control."""
    out: list[str] = []
    for s in summaries:
        if s.condition != "trained":
            continue
        head = f"[{FEATURE_INVERSION}] {s.label}"
        m, n = s.members, s.nonmembers
        if m.get("n") and n.get("n") and s.member_minus_nonmember:
            d = s.member_minus_nonmember["score"]
            how = "paired by subject" if s.member_minus_nonmember.get("paired") else "different subjects"
            out.append(
                f"{head}: members top-1 {m['top1']}/{m['n']}, non-members (held out) {n['top1']}/{n['n']}; "
                f"({how}) "
                f"member - non-member {s.metric} {d['difference']:+.3f} "
                f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p = {d['p_value']:.2g} "
                + (
                    "- no evidence that training on a subject makes it easier to reconstruct."
                    if d["p_value"] >= 0.05
                    else "- members are reconstructed differently from non-members."
                )
            )
        u = s.untrained_over_trained
        if u:
            if u["top1_trained"] == 0 and u["top1_untrained"] == 0:
                meaning = "neither re-identifies anyone."
            elif u["top1_untrained"] >= 0.5 * u["top1_trained"]:
                meaning = (
                    "most of this leak needs no training - it is a property of what the encoder exposes."
                )
            else:
                meaning = "training contributes most of this leak."
            out.append(
                f"{head}: the untrained victim re-identifies {u['top1_untrained']} "
                f"(trained {u['top1_trained']}) with mean {s.metric} {u['score_untrained']:.3f} "
                f"(trained {u['score_trained']:.3f}): {meaning}"
            )
        b = s.baselines
        if b.get("mask_shape_top1") is not None and m.get("n"):
            out.append(
                f"{head}: baselines - mask shape alone {b['mask_shape_top1']}/{m['n']}, scores inside one "
                f"common mask {b['common_mask_top1']}/{m['n']}, the attacker's mean image "
                f"{b['mean_image_top1']}/{m['n']} (chance: {m['n']} x 1/{s.n_candidates} = "
                f"{m['n'] / s.n_candidates:.2g} expected at top-1)."
            )
    return out


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def table_header(metric: str) -> list[str]:
    """Column titles of the controls table."""
    return [
        "victim",
        "tap",
        "members top-1",
        "non-members top-1",
        f"member - non-member {metric} [95% CI], p",
        "untrained victim top-1 (trained)",
        "common-mask top-1",
        "mask-shape top-1",
        "mean-image top-1",
    ]


def table_cells(s: dict[str, Any]) -> list[str]:
    """One row of the controls table (plain text) from a summary of ``controls.json``."""
    d = (s.get("member_minus_nonmember") or {}).get("score")
    diff = (
        "-"
        if not d
        else f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p={d['p_value']:.2g}"
    )
    u = s.get("untrained_over_trained")
    untrained = (
        "-" if not u or s["condition"] != "trained" else f"{u['top1_untrained']} ({u['top1_trained']})"
    )
    b = s["baselines"]
    return [
        s["label"].rsplit(f" {s['tap']} ", 1)[0],
        s["tap"] + (" (beyond the paper)" if s["beyond_paper"] else ""),
        _frac(s["members"]),
        _frac(s["nonmembers"]),
        diff,
        untrained,
        *(_fmt(b.get(k), "{}") for k in ("common_mask_top1", "mask_shape_top1", "mean_image_top1")),
    ]


def controls_markdown(doc: dict[str, Any]) -> str:
    """The controls table (markdown) of a ``controls.json`` document."""
    header = table_header(doc["metric"])
    lines = [
        f"# Controls — threat model: {doc['threat_model']}",
        "",
        f"Scores: {doc['metric']} with the true original, inside each candidate's mask; top-1 among all "
        "candidates (chance 1/N per reconstruction). Rows marked 'beyond the paper' read more than "
        "the latent space (bottleneck) the paper attacks.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(table_cells(s)) + " |" for s in doc["summaries"]),
        "",
        *[f"- {v}" for v in doc["verdicts"]],
        "",
    ]
    return "\n".join(lines)


def _frac(g: dict[str, Any]) -> str:
    return "-" if not g.get("n") else f"{g['top1']}/{g['n']}"


def _rows_csv(rows: list[SubjectRow]) -> str:
    buf = io.StringIO()
    names = list(SubjectRow.__dataclass_fields__)
    writer = csv.writer(buf)
    writer.writerow(["threat_model", *names])
    for r in rows:
        writer.writerow([FEATURE_INVERSION, *("" if v is None else v for v in asdict(r).values())])
    return buf.getvalue()


def read_controls(study_dir: str | Path) -> dict[str, Any] | None:
    """The ``controls.json`` of a study, or ``None`` when the controls were not evaluated."""
    from napari_invert._io import read_json

    path = StudyResults(study_dir).folder.evaluation_dir / "controls" / "controls.json"
    return read_json(path) if path.is_file() else None


def controls_section(ctx: Any) -> Any:
    """Report section (see :mod:`napari_invert.report.html`): the controls table, first after the
    verdict, so every feature-inversion number is read against them."""
    from napari_invert.report.html import Section, esc

    doc = getattr(ctx.summary, "controls", None)
    if not doc or not doc.get("summaries"):
        return None
    metric = esc(doc["metric"])
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in table_cells(s)) + "</tr>" for s in doc["summaries"]
    )
    body = (
        f"<p>Threat model: <b>{esc(doc['threat_model'])}</b>. Each reconstruction is scored ({metric}) "
        "against every candidate original and ranked (top-1 = its own original is the most similar; "
        "chance 1 in the number of candidates). <b>Members</b>: reconstructed from the fold where the "
        "subject trained the victim; <b>non-members</b>: from a fold where it was held out from victim "
        "and attacker (paired by subject). <b>Untrained victim</b>: the same architecture at "
        "initialisation, attacked the same way. <b>Baselines</b>: the brain-mask shape alone, the score "
        "inside one mask common to all candidates, the attacker's mean image. Taps marked <i>beyond the "
        "paper</i> read more than the latent space the paper attacks.</p>"
        "<table class='results'><tr>"
        + "".join(f"<th>{esc(h)}</th>" for h in table_header(doc["metric"]))
        + f"</tr>{rows}</table>"
    )
    return Section("controls", "Controls (feature inversion)", body)
