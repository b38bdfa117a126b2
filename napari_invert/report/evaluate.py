"""Evaluate a study folder: similarity, re-identification, deformation, Dice -> files.

:func:`evaluate_study` reads a (finished or partly finished) study folder through
:class:`~napari_invert.study.results.StudyResults` and writes ``STUDY/evaluation/``
(paths: :class:`~napari_invert.study.layout.EvaluationFolder`)::

    report.html            self-contained (figures embedded, table of contents), opens offline
    summary.json           everything below in one document, plus verdicts, warnings, skips
    metrics.csv            one row per subject x variant x arch x tap x metric
    tables/                table1|table2|table3|dice|native.{csv,md}, identification.csv,
                           dice_per_subject.csv
    figures/*.png
    similarity/<variant>_<arch>_<tap>_<metric>.npy / .json   (reconstruction x candidate)
    similarity/prior_<variant>_<metric>.npy / .json          (fold prior x candidate)
    native/scores.csv      true pairs on each subject's native grid (evaluation.space: native)
    deformation/<variant>_<arch>_<tap>/<ID>.nii.gz           |u| (mm) of the true pairs
    deformation/cache/*.json                                 registrations already done

A study evaluated before this layout (matrices loose in ``evaluation/``) stays readable
(:func:`napari_invert.study.results.similarity_path`); evaluating it again writes the new
layout and removes the loose files it replaces.

One module per concern: :mod:`.matrices` (similarity matrices, ranks),
:mod:`.deformation`, :mod:`.dice` (with the trivial-predictor baseline), :mod:`.native`,
:mod:`.verdicts`, :mod:`.tables`, :mod:`.figures`, :mod:`.html` (+ :mod:`.sections`).

Conventions
-----------
* Rows of a similarity matrix are the subjects whose reconstruction comes from the fold
  in which they were *private* (reconstructions of attack subjects, which the runner also
  writes, are ignored); columns ("candidates") are every subject of the cohort.
* All scores compare a reconstruction (or the prior) with a candidate's original inside
  the candidate original's brain mask, on the model grid (and, with ``evaluation.space:
  native``, the true pairs also on the native grid: :mod:`.native`).
* ``correlation`` = Pearson r (the paper's "MCC"); ``ssim`` = windowed Gaussian SSIM,
  mean over the mask; ``ssim_global`` = one global SSIM over the mask (the paper's
  SSIM); ``deformation`` = mean displacement (mm) of an affine + SyN (or greedy) registration
  of the reconstruction onto the candidate, of its non-linear part or, with
  ``evaluation.deformation.measure: total``, of the whole transform (lower is better).
* The prior (the attacker's mean image of its own subjects, ``<variant>/fold<k>/
  prior.nii.gz``) is scored against each true original; ``gain`` is positive when the
  reconstruction is closer to the subject than the prior is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert._threads import restores_threads
from napari_invert.errors import ConfigError, DataError
from napari_invert.report.deformation import deformation_settings, run_deformation
from napari_invert.report.deformation import sample_columns as _sample_columns  # noqa: F401
from napari_invert.report.dice import DiceRow, compute_dice, dice_order, dice_table, write_dice_csv
from napari_invert.report.dice_baseline import compute_baselines, victim_warnings
from napari_invert.report.matrices import (
    FOREGROUND_THRESHOLD,
    REGIONS,
    SIMILARITY_METRICS,
    VariantData,
    load_variant,
    save_matrix,
    save_npy,  # noqa: F401  (re-exported)
    similarity_matrix,
    write_identification_csv,
)
from napari_invert.report.matrices import identification as _identification
from napari_invert.report.similarity_blocks import remove_inputs, similarity_scores
from napari_invert.report.summary import EvaluationSummary, ExperimentEvaluation, Log
from napari_invert.report.tables import (
    METRICS,
    MetricRow,
    OriginalsVsOthers,
    Table,
    experiment_order,
    gain_of,
    higher_is_better,
    metric_label,
    table1,
    table2,
    table3,
    write_metrics_csv,
)
from napari_invert.report.verdicts import verdicts as _verdicts
from napari_invert.study.results import StudyResults
from napari_invert.threat_models import TRAINING_DATA_LEAKAGE

if TYPE_CHECKING:
    from napari_invert.execution import Executor

__all__ = [
    "ALL_METRICS",
    "DEFORMATION_MODES",
    "FOREGROUND_THRESHOLD",
    "REGIONS",
    "SIMILARITY_METRICS",
    "EvaluationSummary",
    "ExperimentEvaluation",
    "evaluate_study",
    "similarity_matrix",
]

ALL_METRICS: tuple[str, ...] = ("correlation", "ssim", "ssim_global", "deformation", "dice")
DEFORMATION_MODES: tuple[str, ...] = ("off", "sample", "full")


def _resolve_metrics(metrics: Sequence[str] | None, configured: Sequence[str]) -> list[str]:
    chosen = list(configured if metrics is None else metrics)
    unknown = [m for m in chosen if m not in ALL_METRICS]
    if unknown:
        raise ConfigError(f"evaluate: unknown metric(s) {unknown} (choose from {list(ALL_METRICS)})")
    return [m for m in ALL_METRICS if m in chosen]


def _resolve_device(device: Any, configured: str):  # -> torch.device
    from napari_invert.device import resolve_device

    return resolve_device(configured if device is None else device)


def _controls(study_root: Path, config: Any, device: Any, log: Log) -> dict[str, Any] | None:
    """Members vs non-members, untrained victim and re-identification baselines
    (:mod:`napari_invert.report.controls`), when the study has any of them."""
    from napari_invert.report.controls import evaluate_controls

    splits = StudyResults(study_root).splits
    has_holdout = any(f.get("holdout") for f in splits["folds"])
    if not (has_holdout or config.controls.untrained_victim or config.controls.reid_baselines):
        return None
    log("controls: members vs non-members, untrained victim, re-identification baselines")
    return evaluate_controls(study_root, device=device, log=log)


def _membership(results: StudyResults, log: Log) -> dict[str, dict[str, Any]]:
    """Pool the runner's per-fold membership-inference results: ``{"<variant>/<arch>": pooled}``."""
    from napari_invert.membership import write_pooled_membership

    pooled: dict[str, dict[str, Any]] = {}
    for variant in results.variants:
        for arch in sorted({a for f in (results.root / variant).glob("fold*") for a in _arch_dirs(f)}):
            doc = write_pooled_membership(results.folder, variant, arch)
            if doc is not None:
                pooled[f"{variant}/{arch}"] = doc
                log(f"membership inference pooled: {variant}/{arch}")
    return pooled


def _audit_membership_note(root: Path) -> str | None:
    """For an audit folder without a membership result: why (from ``audit.json``)."""
    path = root / "audit.json"
    if not path.is_file():
        return None
    from napari_invert._io import read_json

    status = (read_json(path).get("membership") or {}).get("status") or "not run"
    return f"[{TRAINING_DATA_LEAKAGE}] not measured: {status}."


def _arch_dirs(fold_dir: Path) -> list[str]:
    return [p.name for p in fold_dir.iterdir() if p.is_dir()]


def membership_verdicts(pooled: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per pooled result: the strongest attack's AUC beside its untrained control."""
    out = []
    for key, doc in pooled.items():
        if not doc.get("attacks"):
            continue
        name, best = max(doc["attacks"].items(), key=lambda kv: kv[1]["auc"])
        control = doc.get("controls", {}).get("untrained_victim", {}).get("attacks", {}).get(name)
        lo, hi = best["auc_ci"]
        text = (
            f"[{TRAINING_DATA_LEAKAGE}] {key}: membership inference AUC {best['auc']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] "
            f"({name}, p = {best['auc_p_value']:.2g}; {doc['n_members']} members vs {doc['n_nonmembers']} "
            "held-out non-members; chance 0.5)"
        )
        if control:
            text += f"; untrained victim {control['auc']:.2f}"
        text += (
            ". The weights reveal who trained them."
            if lo > 0.5
            else ". No clear evidence the weights reveal who trained them."
        )
        if doc.get("lira"):  # an audit says whether (and how) shadows of the user's model were trained
            shadows = any(doc.get("n_shadows") or [])
            text += (
                f" Likelihood-ratio attack (LiRA): {doc['lira']}."
                if shadows
                else f" Threshold attacks only; likelihood-ratio attack (LiRA) {doc['lira']}."
            )
        out.append(text)
    return out


def _private_fold(results: StudyResults, subject_id: str) -> int | None:
    try:
        return results.fold_of(subject_id)
    except KeyError:
        return None


@restores_threads
def evaluate_study(
    study_dir: str | Path,
    metrics: Sequence[str] | None = None,
    deformation: str | None = None,
    device: Any = None,
    progress: bool = True,
    *,
    figures: bool = True,
    region: str = "mask",
    backend: str | None = None,
    address: str | None = None,
    executor: Executor | None = None,
) -> EvaluationSummary:
    """Evaluate every experiment of a study folder and write ``STUDY/evaluation/``.

    Parameters
    ----------
    study_dir
        A study folder (see :mod:`napari_invert.study.layout`).
    metrics
        Subset of ``correlation``, ``ssim``, ``ssim_global``, ``deformation``, ``dice``;
        default: ``evaluation.metrics`` of the study's config.
    deformation
        ``off`` | ``sample`` (true original + ``evaluation.deformation.sample_size`` = k
        random others per reconstruction: ranks among 1 + k, chance 1/(k+1)) | ``full``
        (all pairs). Default: the config's mode when ``deformation`` is among the metrics,
        else ``off``. ``sample``/``full`` turn the deformation metric on even if
        ``metrics`` omits it. The ANTs preset is ``evaluation.deformation.preset``.
    device
        For correlation and segmentation (``"auto"``, ``"cpu"``, ``"cuda"``); default: the
        config's ``device``.
    progress
        Print progress lines to stderr.
    figures
        Draw the PNG figures (and embed them in ``report.html``); ``False`` writes the
        numbers, tables and a figure-less report only (faster).
    region
        Where scores are computed: ``mask`` (default) = the study's mask of the candidate
        original (``data/<variant>/masks``, the brain mask, also for ``full_head``);
        ``foreground`` = the candidate original's voxels above
        :data:`FOREGROUND_THRESHOLD` x the data range (the paper's "voxels of the original
        above a threshold": for with-skull images this includes skull and scalp).
    backend, address
        Where the similarity-matrix row blocks and the registrations run: ``local`` (this
        process, and ``evaluation.deformation.workers`` registration processes) or ``ray``
        (units on the Ray cluster at ``address``, the study folder on storage every node
        sees); default: the config's ``execution`` block.
    executor
        Run those units on this executor instead (overrides ``backend``; e.g.
        ``make_executor("local", jobs=2)`` gives numbers bit-identical to Ray's).

    With ``evaluation.space: native`` in the config, the true pairs are also scored on
    each subject's native grid (:mod:`napari_invert.report.native`) and reported beside
    the model-grid scores. Every file is written atomically; rerunning overwrites them and
    reuses the cached registrations in ``evaluation/deformation/cache``.
    """
    from napari_invert.config import load_config

    t_start = time.perf_counter()
    log = Log(progress)
    results = StudyResults(study_dir)
    folder = results.folder
    layout = folder.evaluation
    config = load_config(folder.config_path)
    ev_cfg = config.evaluation
    chosen = _resolve_metrics(metrics, ev_cfg.metrics)
    if deformation is None:
        mode = ev_cfg.deformation.mode if "deformation" in chosen else "off"
    else:
        if deformation not in DEFORMATION_MODES:
            raise ConfigError(
                f"evaluate: deformation must be one of {DEFORMATION_MODES}, got {deformation!r}"
            )
        mode = deformation
    if mode == "off":
        chosen = [m for m in chosen if m != "deformation"]
    elif "deformation" not in chosen:
        chosen = [m for m in ALL_METRICS if m in [*chosen, "deformation"]]
    if not chosen:
        raise ConfigError("evaluate: no metric to compute (deformation is off and no other metric chosen)")
    if region not in REGIONS:
        raise ConfigError(f"evaluate: region must be one of {REGIONS}, got {region!r}")
    layout.root.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    notes: list[str] = []
    files: list[Path] = []

    experiments = sorted(results.experiments(), key=experiment_order)
    if region == "mask" and any(e.variant == "full_head" for e in experiments):
        notes.append(
            "full_head scores are computed inside the brain mask (data/full_head/masks); the paper's "
            "with-skull SSIM used all voxels of the original above a threshold (skull and scalp "
            "included): rerun with region='foreground' for that."
        )
    elif region == "foreground":
        notes.append(
            f"Scores are computed over each candidate original's voxels above {FOREGROUND_THRESHOLD:g} x "
            "the data range (region='foreground'), not inside the study's masks."
        )
    if not experiments:
        raise DataError(folder.root, "no reconstructions found (run the study first)")
    if config.num_threads:
        from napari_invert.device import set_threads

        set_threads(evaluation_threads(config.num_threads, config.jobs))
    torch_device = _resolve_device(device, config.device)
    log(f"{len(experiments)} experiment(s); metrics {chosen}; deformation {mode}")
    if executor is None:
        executor = _executor(config, backend, address)
    blocks_dir = layout.similarity_blocks_dir.resolve()  # absolute: workers have another cwd
    if executor is not None:
        log(f"similarity row blocks and registrations run as units on the {executor.name} backend")

    def scores(metric: str, queries: np.ndarray, vd: VariantData) -> np.ndarray:
        # on an executor each worker resolves the device itself ("auto": its own GPU if any)
        dev = torch_device if executor is None else (config.device if device is None else device)
        return similarity_scores(
            metric, queries, vd.originals, vd.masks, vd.data_range, dev, executor, blocks_dir, log.enabled
        )

    # -- per variant: candidates, priors, prior scores ----------------------------------------
    variants: dict[str, VariantData] = {}
    for variant in sorted({e.variant for e in experiments}):
        variants[variant] = load_variant(results, variant, region)
        vd = variants[variant]
        for metric in [m for m in SIMILARITY_METRICS if m in chosen and len(vd.folds)]:
            vd.prior_similarity[metric] = scores(metric, vd.priors, vd)
            files += save_matrix(
                layout.prior_similarity(variant, metric),
                vd.prior_similarity[metric],
                [f"fold{k}" for k in vd.folds],
                vd.candidate_ids,
                metric,
                "rows: the attacker's prior (mean image) of each fold",
            )
        log(f"{variant}: {len(vd.candidate_ids)} candidates, data range {vd.data_range:.3g}")

    # -- per experiment: similarity matrices and identification -----------------------------
    evaluations: list[ExperimentEvaluation] = []
    for exp in experiments:
        vd = variants[exp.variant]
        row_ids = [
            s for s in vd.candidate_ids if _private_fold(results, s) is not None and results.has_recon(exp, s)
        ]
        missing = [s for s in vd.candidate_ids if s not in row_ids]
        if missing:
            notes.append(
                f"{exp.label}: no reconstruction from the private fold for {len(missing)} "
                f"subject(s) ({', '.join(missing[:8])}{'...' if len(missing) > 8 else ''})."
            )
        if not row_ids:
            continue
        row_folds = [results.fold_of(s) for s in row_ids]
        recons = np.stack([results.recon(exp, s) for s in row_ids])
        true_index = np.array([vd.index(s) for s in row_ids], dtype=int)
        prior_rows = [vd.prior_index(f) for f in row_folds]  # DataError if a fold lacks its prior
        ev = ExperimentEvaluation(exp, row_ids, row_folds, vd.candidate_ids, true_index)
        for metric in [m for m in SIMILARITY_METRICS if m in chosen]:
            ev.similarity[metric] = scores(metric, recons, vd)
            pm = vd.prior_similarity[metric]
            ev.prior_values[metric] = np.array(
                [pm[p, t] for p, t in zip(prior_rows, true_index)], dtype=float
            )
            ev.candidates_per_row[metric] = len(vd.candidate_ids)
        first_tap = (config.attack.taps.get(exp.arch) or [exp.tap])[0]
        if mode != "off" and (ev_cfg.deformation.taps == "all" or exp.tap == first_tap):
            run_deformation(results, ev, vd, recons, mode, ev_cfg.deformation, log, files, executor)
        for metric, matrix in ev.similarity.items():
            higher = higher_is_better(metric)
            n_bad = int(np.isnan(matrix).sum()) if metric != "deformation" else 0
            if n_bad:
                notes.append(
                    f"{exp.label}: {n_bad} undefined {metric_label(metric)} score(s) "
                    "(constant image inside the mask) ranked as the worst."
                )
            ev.ranks[metric], ev.identification[metric] = _identification(
                matrix, true_index, higher, ev.candidates_per_row[metric], metric == "deformation"
            )
            files += save_matrix(
                layout.similarity(exp.variant, exp.arch, exp.tap, metric),
                matrix,
                row_ids,
                vd.candidate_ids,
                metric,
                "rows: reconstructions (private fold)",
            )
        evaluations.append(ev)
        log(f"{exp.label}: {len(row_ids)} reconstructions scored")
        del recons

    # -- Dice and the trivial baseline ----------------------------------------------------------
    dice_rows: list[DiceRow] = []
    dice_metric_rows: list[MetricRow] = []
    baselines = []
    warnings: list[str] = []
    if "dice" in chosen:
        dice_rows, dice_metric_rows, reason = compute_dice(results, evaluations, variants, torch_device, log)
        dice_rows.sort(key=dice_order)
        if reason and dice_rows:
            notes.append(f"Dice computed only in part: {reason}.")
        elif reason:
            skipped["dice"] = reason
            log(f"Dice skipped: {reason}")
        if dice_rows:
            baselines = compute_baselines(
                results,
                dice_rows,
                results.cohort.get("n_classes"),
                min_gain=config.segmenter_training.min_dice_gain,
            )
    from napari_invert.study.convergence import victim_segmentation_check

    # per fold (the victims' own records) and folds pooled (above): one banner where they agree
    warnings += victim_warnings(baselines, victim_segmentation_check(folder))

    # -- native grid ------------------------------------------------------------------------------
    native = None
    if ev_cfg.space == "native":
        from napari_invert.report.native import evaluate_native, write_native_csv

        try:
            native = evaluate_native(results, config, evaluations, variants, log)
        except DataError as exc:
            skipped["native"] = f"native-grid scores not computed: {exc}"
            log(skipped["native"])
        else:
            files.append(write_native_csv(layout.native_scores_csv, native))
            notes += [f"Native grid: {n}" for n in native.notes]

    # -- rows, tables, figures, report --------------------------------------------------------
    metric_rows = _metric_rows(evaluations) + dice_metric_rows
    metric_rows.sort(
        key=lambda r: (experiment_order(r.experiment), list(METRICS).index(r.metric), r.subject_id)
    )
    files.append(write_metrics_csv(layout.metrics_csv, metric_rows))
    files.append(write_identification_csv(layout.identification_csv, evaluations))
    if dice_rows:
        files.append(write_dice_csv(layout.dice_csv, dice_rows))

    tables = _tables(evaluations, metric_rows, dice_rows, mode, baselines)
    if native is not None:
        from napari_invert.report.native import native_table

        tables.append(native_table(native))
    for t in tables:
        files.append(write_text_atomic(layout.table(t.name, "csv"), t.to_csv()))
        files.append(write_text_atomic(layout.table(t.name, "md"), t.to_markdown()))
    verdicts = _verdicts(evaluations, ev_cfg.identification_metric)
    controls = _controls(folder.root, config, torch_device, log)
    if controls is not None:
        files.append(layout.controls_json)
        verdicts = controls["verdicts"] + verdicts  # lead with the controls
    membership = _membership(results, log)
    verdicts += membership_verdicts(membership) or [
        _audit_membership_note(folder.root)
        or f"[{TRAINING_DATA_LEAKAGE}] not measured: membership inference needs held-out non-members "
        "(set holdout > 0 and membership.enabled in the config)."
    ]
    frontier = None
    if folder.defended_results():  # defended victims (napari-invert defend): the frontier
        from napari_invert.report.frontier import write_frontier

        try:
            frontier = write_frontier([folder.root])
        except DataError as exc:  # e.g. a result.json of another format: the rest of the report stands
            skipped["frontier"] = f"defence frontier not written: {exc}"
            log(skipped["frontier"])
        else:
            verdicts += frontier["verdict"]
    n_candidates = max((len(v.candidate_ids) for v in variants.values()), default=0)
    summary = EvaluationSummary(
        study_dir=folder.root,
        evaluation_dir=layout.root,
        metrics=chosen,
        deformation_mode=mode,
        experiments=evaluations,
        metric_rows=metric_rows,
        dice_rows=dice_rows,
        skipped=skipped,
        notes=notes,
        verdicts=verdicts,
        files=files,
        seconds=0.0,
        data_range={v: d.data_range for v, d in variants.items()},
        region=region,
        warnings=warnings,
        deformation_settings=deformation_settings(ev_cfg.deformation, mode, n_candidates),
        native=native,
        dice_baseline=baselines,
        membership=membership,
        controls=controls,
        frontier=frontier,
    )
    from napari_invert.report.figures import make_figures
    from napari_invert.report.html import write_report

    drawn = make_figures(results, summary, variants_data=variants, log=log) if figures else []
    if figures and membership:
        from napari_invert.report.figures import FigureFile
        from napari_invert.report.membership import membership_roc_figure

        roc = membership_roc_figure(layout.figure("membership_roc"), membership)
        drawn.append(FigureFile(roc, "Membership inference ROC", "training-data leakage", "membership"))
    files += [f.path for f in drawn]
    files += [layout.report_html, layout.summary_json]
    summary.seconds = time.perf_counter() - t_start
    write_report(layout.report_html, results, summary, tables, drawn)
    write_json_atomic(layout.summary_json, summary.to_dict())
    for old in layout.legacy_files():  # the flat layout's loose files, now replaced
        old.unlink(missing_ok=True)
    if executor is not None:
        remove_inputs(blocks_dir)  # the blocks' copies of the volumes; their results stay
    log(f"done in {summary.seconds:.1f}s -> {layout.root}")
    return summary


def evaluation_threads(num_threads: int, jobs: int, cpus: int | None = None) -> int:
    """Torch CPU threads for the evaluation, which runs in one process: the cores the study's
    ``jobs`` processes of ``num_threads`` threads each used (``num_threads * jobs``), but no
    more than the ``cpus`` this process may run on (default: its CPU affinity) and at least 1."""
    import os

    if not cpus:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(num_threads) * max(int(jobs), 1), cpus))


def _executor(config: Any, backend: str | None, address: str | None) -> Executor | None:
    """The executor of ``backend`` (default: ``config.execution``); ``None`` for ``local``,
    which evaluates in this process (and ``evaluation.deformation.workers`` processes)."""
    from napari_invert.execution import make_executor

    chosen = backend or config.execution.backend
    if chosen == "local":
        return None
    return make_executor(chosen, address=address or config.execution.address)


def _metric_rows(evaluations: list[ExperimentEvaluation]) -> list[MetricRow]:
    rows = []
    for ev in evaluations:
        e = ev.experiment
        for metric in ev.similarity:
            true = ev.true_values(metric)
            prior = ev.prior_values[metric]
            ranks = ev.ranks[metric]
            for i, sid in enumerate(ev.row_ids):
                rows.append(
                    MetricRow(
                        sid,
                        ev.row_folds[i],
                        e.variant,
                        e.arch,
                        e.tap,
                        metric,
                        float(true[i]),
                        float(prior[i]),
                        gain_of(metric, float(true[i]), float(prior[i])),
                        int(ranks[i]),
                    )
                )
    return rows


def _tables(
    evaluations: list[ExperimentEvaluation],
    rows: list[MetricRow],
    dice_rows: list[DiceRow],
    mode: str,
    baselines: Sequence[Any] = (),
) -> list[Table]:
    """Tables 1-3 (and the Dice table when there are Dice rows)."""
    t2data = {
        ev.experiment: {m: OriginalsVsOthers(ev.true_values(m), ev.other_values(m)) for m in ev.similarity}
        for ev in evaluations
    }
    n_cand = {ev.experiment: len(ev.candidate_ids) for ev in evaluations}
    note = None
    sampled = None
    per_row = [
        ev.candidates_per_row["deformation"] for ev in evaluations if "deformation" in ev.candidates_per_row
    ]
    if mode == "sample" and per_row:
        note = {"deformation": f"true + {per_row[0] - 1} sampled, chance 1/{per_row[0]}"}
        sampled = {"deformation": per_row[0]}
    tables = [table1(rows), table2(t2data), table3(rows, n_cand, note, sampled)]
    if dice_rows:
        tables.append(dice_table(dice_rows, baselines))
    return tables
