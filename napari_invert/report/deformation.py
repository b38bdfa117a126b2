"""Deformation (paper Section 4.2.2): register reconstructions onto candidate originals.

``full`` registers every reconstruction x candidate pair, so the true original is ranked
among all N candidates as in the paper (chance 1/N). ``sample`` registers the true
original plus ``evaluation.deformation.sample_size`` = k others per reconstruction, so the
true original is ranked among **1 + k** candidates (chance 1/(k+1)): such ranks are not
comparable with the paper's 24/40 and 22/40 (ranked among 40), and every table and
figure says which chance level applies (:func:`chance_text`).

The ANTs presets are described by :func:`preset_text` from
:data:`napari_invert.metrics.deformation.PRESETS` (e.g. ``fast`` does no SyN iteration at
the finest, full-resolution level).
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert.report.matrices import VariantData
from napari_invert.report.summary import ExperimentEvaluation, Log
from napari_invert.study.results import StudyResults

if TYPE_CHECKING:
    from napari_invert.execution import Executor
    from napari_invert.report.html import ReportContext, Section


#: what each ``evaluation.deformation.measure`` is, for the report
MEASURE_TEXT = {
    "nonlinear": "mean norm (mm) of the non-linear field after the affine stage (the paper's metric)",
    "total": "mean displacement (mm) of the whole transform, affine + non-linear",
}


def preset_text(preset: str, backend: str = "ants") -> str:
    """What a registration preset does, in one sentence (from the preset's own iteration
    counts), beginning with the backend's name."""
    if backend == "fireants":
        from napari_invert.metrics.registration.fireants import FIREANTS_PRESETS

        f = FIREANTS_PRESETS.get(preset)
        if f is None:
            return f"FireANTs preset '{preset}'"
        aff = "x".join(str(i) for i in f.aff_iterations)
        greedy = "x".join(str(i) for i in f.def_iterations)
        return (
            f"FireANTs preset '{preset}': affine ({f.aff_loss.upper()}) {aff} iterations, then greedy "
            f"(CC kernel {f.cc_kernel_size}) {greedy} at scales {'/'.join(map(str, f.def_scales))}"
        )
    from napari_invert.metrics.deformation import PRESETS

    p = PRESETS.get(preset)
    if p is None:
        return f"ANTs preset '{preset}'"
    syn = "x".join(str(i) for i in p.reg_iterations)
    aff = "x".join(str(i) for i in p.aff_iterations)
    text = f"ANTs preset '{preset}': affine (MI) {aff} iterations, then SyN (CC radius {p.syn_radius}) {syn}"
    if p.reg_iterations and p.reg_iterations[-1] == 0:
        text += (
            " — no SyN iteration at the finest (full-resolution) level: the field is optimised "
            "at half resolution and upsampled, so fine differences go unmeasured"
        )
    return text


def chance_text(candidates_per_row: int | None, mode: str = "full") -> str:
    """``chance 1/4 (true + 3 sampled)`` for a sampled ranking, ``chance 1/40`` otherwise."""
    if not candidates_per_row:
        return "chance –"
    if mode == "sample":
        return f"chance 1/{candidates_per_row} (true + {candidates_per_row - 1} sampled)"
    return f"chance 1/{candidates_per_row}"


def deformation_settings(cfg: Any, mode: str, n_candidates: int) -> dict[str, Any]:
    """JSON-ready description of the deformation run (``summary.json`` -> ``deformation``)."""
    if mode == "off":
        return {"mode": "off"}
    per_row = n_candidates if mode == "full" else min(n_candidates, 1 + int(cfg.sample_size))
    return {
        "mode": mode,
        "preset": cfg.preset,
        "preset_text": preset_text(cfg.preset, cfg.backend),
        "backend": cfg.backend,
        "measure": cfg.measure,
        "measure_text": MEASURE_TEXT[cfg.measure],
        "sample_size": int(cfg.sample_size) if mode == "sample" else None,
        "candidates_per_row": per_row,
        "chance_top1": 1.0 / per_row if per_row else None,
        "chance_text": chance_text(per_row, mode),
        "comparable_with_paper": mode == "full",
    }


def sample_columns(row_id: str, true_col: int, n: int, k: int) -> list[int]:
    """True column plus ``k`` others, chosen reproducibly from the subject id."""
    others = [c for c in range(n) if c != true_col]
    rng = np.random.default_rng(zlib.crc32(row_id.encode("utf-8")))
    pick = rng.choice(len(others), size=min(k, len(others)), replace=False) if others else []
    return sorted([true_col, *(others[int(i)] for i in pick)])


#: ANTs seed of every registration (reproducible with single-threaded workers).
DEFORMATION_SEED = 0


def run_deformation(
    results: StudyResults,
    ev: ExperimentEvaluation,
    vd: VariantData,
    recons: np.ndarray,
    mode: str,
    cfg: Any,
    log: Log,
    files: list[Path],
    executor: Executor | None = None,
) -> None:
    """Register reconstructions (moving) onto candidate originals (fixed), paper 4.2.2.

    ``full``: every pair; ``sample``: the true original plus ``cfg.sample_size`` others
    per reconstruction. Also registers each row's fold prior onto the true original.
    Uses :func:`napari_invert.metrics.deformation_matrix` (parallel workers, content-keyed
    cache in ``evaluation/deformation/cache``: a rerun does not recompute); the magnitude
    maps of the true pairs are written as NIfTI on the model grid
    (``evaluation/deformation/<variant>_<arch>_<tap>/<ID>.nii.gz``). With ``executor`` the
    registrations run as blocks of pairs on it (e.g. Ray) instead of ``cfg.workers``
    processes; the numbers are the same (one ITK thread per registration either way).
    """
    from napari_invert.data.nifti import save_nifti
    from napari_invert.metrics.deformation import deformation_matrix, magnitude_cache_path

    n_rows, n = len(ev.row_ids), len(vd.candidate_ids)
    layout = results.folder.evaluation
    cache_dir = layout.deformation_cache_dir.resolve()  # absolute: executor workers have another cwd
    e = ev.experiment
    spacing = results.spacing
    true_pairs = [(r, int(t)) for r, t in enumerate(ev.true_index)]
    other_pairs = []
    for r, sid in enumerate(ev.row_ids):
        t = int(ev.true_index[r])
        cols = range(n) if mode == "full" else sample_columns(sid, t, n, cfg.sample_size)
        other_pairs += [(r, c) for c in cols if c != t]
    # moving images: the reconstructions, then the fold priors (for the prior baseline)
    moving = [*recons, *vd.priors]
    prior_pairs = [(n_rows + vd.prior_index(f), int(t)) for f, t in zip(ev.row_folds, ev.true_index)]
    common: dict[str, Any] = {
        "spacing": spacing,
        "preset": cfg.preset,
        "masks": list(vd.masks),
        "workers": cfg.workers,
        "cache_dir": cache_dir,
        "progress": log.enabled,
        "seed": DEFORMATION_SEED,
        "backend": cfg.backend,
        "executor": executor,
        "measure": cfg.measure,
    }
    t0 = time.perf_counter()
    values = deformation_matrix(list(vd.originals), moving, true_pairs, save_magnitude=True, **common)
    values.update(deformation_matrix(list(vd.originals), moving, other_pairs + prior_pairs, **common))
    matrix = np.full((n_rows, n), np.nan)
    for (r, c), v in values.items():
        if r < n_rows:
            matrix[r, c] = v
    for r, t in true_pairs:
        npy = magnitude_cache_path(
            cache_dir,
            vd.originals[t],
            recons[r],
            spacing,
            cfg.preset,
            vd.masks[t],
            DEFORMATION_SEED,
            backend=cfg.backend,
        )
        if npy.is_file():
            target = layout.deformation_map(e.variant, e.arch, e.tap, ev.row_ids[r])
            files.append(save_nifti(target, np.load(npy).astype(np.float32), results.affine))
    ev.similarity["deformation"] = matrix
    ev.prior_values["deformation"] = np.array([values[p] for p in prior_pairs], dtype=float)
    ev.candidates_per_row["deformation"] = n if mode == "full" else min(n, 1 + cfg.sample_size)
    log(
        f"{e.label}: deformation ({mode}), {len(values)} registrations "
        f"({time.perf_counter() - t0:.1f}s, cached pairs reused)"
    )


def deformation_section(ctx: ReportContext) -> Section | None:
    """Report section: how the registrations were run (mode, chance level, preset) and the
    Figure 7 style magnitude maps."""
    from napari_invert.report.html import Section, esc, figure_html

    d = ctx.summary.deformation_settings or {}
    figs = ctx.figures_of("deformation")
    if d.get("mode") in (None, "off") and not figs:
        return None
    items = [
        f"Mode <b>{esc(d.get('mode'))}</b>: true original ranked among {esc(d.get('candidates_per_row'))} "
        f"candidates per reconstruction ({esc(d.get('chance_text'))}).",
        f"{esc(d.get('preset_text'))}.",
        f"The number: {esc(d.get('measure_text', MEASURE_TEXT['nonlinear']))}.",
    ]
    if d.get("mode") == "sample":
        items.append(
            "Sample-mode ranks are not comparable with the paper's deformation counts (24/40 U-Net, 22/40 "
            "SegNet, ranked among all 40 subjects); rerun with <code>--deformation full</code> to compare."
        )
    body = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    body += "\n".join(figure_html(f) for f in figs)
    return Section("deformation", "Deformation (Figure 7 style)", body)
