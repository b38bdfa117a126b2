"""FireANTs versus ANTs on the same pairs: does the GPU backend rank candidates the same way?

``python -m napari_invert.bench.registration_agreement --out DIR [--rows 10] [--candidates 40] [--first 0]``

Data: LPBA40 preprocessed exactly as ``sample_configs/quick_cpu.yaml`` (4 mm, percentile
normalisation, cropped to the brain masks) with
:func:`napari_invert.data.prepare.prepare_cohort`. Stand-in reconstructions of the first
``rows`` subjects from subject ``--first`` (0-based; ``--first 20`` gives pairs disjoint from
the default block): the original blurred (Gaussian, ``--sigma`` voxels) plus Gaussian noise
(``--noise`` SD), so the true original is not trivially the closest. Every stand-in is
registered to each of the ``candidates`` originals from ``--first`` on (the true one among them) by each
backend's ``fast`` preset, with the mask of the original, through
:func:`napari_invert.metrics.deformation_matrix` (content-keyed cache in ``DIR/cache``:
resumable; run ``--backend ants`` and ``--backend fireants`` in two processes, then once
more without ``--backend`` to compute the agreement from the cache; ``--backend ants
ants_variant`` computes those runs and the agreements among them only).

Reported (``DIR/agreement.json``), for the deformation measure of the study reports (the
non-linear part's mean norm; ``matrices`` and the top-level figures) and again under
``total`` for the whole transform's mean displacement (affine + non-linear, from the same
cache, :data:`~napari_invert.metrics.registration.common.MEASURES`): Pearson correlation
of the mean displacement over all pairs; Spearman correlation over all pairs; per row,
the Spearman correlation of the two candidate rankings (mean and minimum over rows); each
backend's re-identification rank of the true original per row and the Spearman
correlation of those ranks (undefined, ``null``, when a backend gives every row the same
rank); seconds per pair of each backend.

``--study DIR [--experiment ARCH/TAP]``: the attack's own reconstructions of a study folder
instead of stand-ins (:func:`study_block`), on the study's grid and masks.

The control (``ants_reseeded``): ANTs run a second time on the same pairs with another MI
sampling seed (``--control-seed``), and the same figures for ANTs against itself. ANTs'
affine stage samples 20 % of the voxels at random, so the reference does not agree with
itself perfectly either; FireANTs-versus-ANTs agreement is to be read against this ceiling,
not against 1.

The second control (``ants_variant``): ANTs with other, equally standard SyN parameters
(:data:`VARIANT_PRESET`: the ``paper`` preset's gradient step 0.1 and CC radius 4 on the
``fast`` schedule). Where ANTs against this variant agrees no better than FireANTs against
ANTs, the order of the wrong candidates is set by the registration's parameters, not by the
pair, and no other backend can be expected to reproduce it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import write_json_atomic
from napari_invert.metrics.registration.ants import PRESETS

__all__ = ["VARIANT_PRESET", "agreement", "agreements", "main", "stand_ins", "study_block"]

#: ANTs' ``fast`` schedule with the ``paper`` preset's SyN gradient step (0.1) and CC radius (4):
#: another parameter set a user could equally choose (about 7 s per pair at 4 mm, one thread).
VARIANT_PRESET = dataclasses.replace(PRESETS["fast"], name="fast_step0.1_cc4", grad_step=0.1, syn_radius=4)

#: the runs of the bench: the two backends' ``fast`` presets and the two ANTs controls
_RUNS = ("ants", "fireants", "ants_reseeded", "ants_variant")


def _prepared(n: int, cache: Path) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    from napari_invert.config import load_config
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.prepare import prepare_cohort

    cfg = load_config(Path(__file__).resolve().parents[2] / "sample_configs" / "quick_cpu.yaml")
    cohort = Cohort.from_path(cfg.cohort.path, kind="lpba40", n_subjects=n)
    prepared = prepare_cohort(
        cohort,
        cfg.preprocess,
        multiple_of=cfg.multiple_of,
        variant="skull_stripped",
        label_mode=cfg.cohort.label_mode,
        cache_dir=cache,
        progress=False,
    )
    images = [np.asarray(s.image, dtype=np.float32) for s in prepared.subjects]
    masks = [np.asarray(s.mask, dtype=bool) for s in prepared.subjects]
    return images, masks, float(cfg.preprocess.voxel_mm or 1.0)


def study_block(root: str | Path, experiment: str | None, rows: int, candidates: int) -> dict[str, Any]:
    """Real reconstructions instead of stand-ins: the first ``rows`` reconstructed subjects of one
    experiment of a study folder, and ``candidates`` originals of the same variant, the rows'
    own originals first (so the true original of row ``i`` is column ``i``).

    ``experiment``: ``ARCH/TAP`` (e.g. ``unet/bottleneck+skips``; ``unet@untrained/bottleneck``
    for the control victim); default, the first trained victim's first tap. Returns ``images``,
    ``masks``, ``moving`` (lists of ``(X, Y, Z)`` arrays), ``spacing`` (mm), ``row_ids``,
    ``candidate_ids`` and ``experiment`` (its label). Raises ValueError naming the experiments
    when ``experiment`` is not in the study, or when the study has fewer subjects than asked.
    """
    from napari_invert.study.results import StudyResults

    study = StudyResults(root)
    experiments = study.experiments()
    if experiment is None:
        chosen = next((e for e in experiments if "@" not in e.arch), None)
    else:
        chosen = next((e for e in experiments if f"{e.arch}/{e.tap}" == experiment), None)
    if chosen is None:
        names = ", ".join(f"{e.arch}/{e.tap}" for e in experiments) or "none"
        raise ValueError(f"{root}: no experiment {experiment or '(trained victim)'}; it has: {names}")
    done = [s for s in study.subject_ids if study.has_recon(chosen, s)]
    if len(done) < rows or len(study.subject_ids) < candidates:
        raise ValueError(
            f"{root}: asked for {rows} reconstructions among {candidates} candidates; "
            f"{chosen.label} has {len(done)} reconstructions and the study {len(study.subject_ids)} subjects"
        )
    row_ids = done[:rows]
    candidate_ids = (row_ids + [s for s in study.subject_ids if s not in row_ids])[:candidates]
    return {
        "images": [study.original(chosen.variant, s) for s in candidate_ids],
        "masks": [study.mask(chosen.variant, s) for s in candidate_ids],
        "moving": [study.recon(chosen, s) for s in row_ids],
        "spacing": tuple(float(x) for x in study.spacing),
        "row_ids": row_ids,
        "candidate_ids": candidate_ids,
        "experiment": chosen.label,
    }


def stand_ins(images: list[np.ndarray], sigma: float, noise: float, seed: int = 0) -> list[np.ndarray]:
    """Blurred + noisy copies (float32) standing in for reconstructions."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return [
        (ndimage.gaussian_filter(im, sigma) + rng.normal(0.0, noise, im.shape)).astype(np.float32)
        for im in images
    ]


def _ranks_of_truth(matrix: np.ndarray) -> list[int]:
    """1-based rank of column ``i`` in row ``i`` (ascending: smaller deformation = closer)."""
    return [int(np.sum(row < row[i]) + 1) for i, row in enumerate(matrix)]


def agreement(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("ants", "fireants")) -> dict[str, Any]:
    """Agreement of two ``(rows, candidates)`` matrices of mean displacement (mm); ``names``
    label the per-matrix entries (``true_rank_<name>``, ``top1_<name>``)."""
    from scipy import stats

    rows = [float(stats.spearmanr(x, y).statistic) for x, y in zip(a, b)]
    ra, rb = _ranks_of_truth(a), _ranks_of_truth(b)
    constant = len(set(ra)) == 1 or len(set(rb)) == 1  # Spearman undefined
    return {
        "pairs": int(a.size),
        "pearson_mean_displacement": float(stats.pearsonr(a.ravel(), b.ravel()).statistic),
        "spearman_all_pairs": float(stats.spearmanr(a.ravel(), b.ravel()).statistic),
        "spearman_per_row_mean": float(np.mean(rows)),
        "spearman_per_row_min": float(np.min(rows)),
        f"true_rank_{names[0]}": ra,
        f"true_rank_{names[1]}": rb,
        "true_rank_spearman": None if constant else float(stats.spearmanr(ra, rb).statistic),
        f"top1_{names[0]}": float(np.mean(np.asarray(ra) == 1)),
        f"top1_{names[1]}": float(np.mean(np.asarray(rb) == 1)),
    }


def agreements(matrices: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every comparison the bench reports, among the runs present in ``matrices``:
    ``agreement`` (FireANTs vs ANTs), ``control_ants_reseeded``, ``control_ants_variant`` and
    ``fireants_vs_ants_variant`` (see the module docstring)."""
    out: dict[str, Any] = {}
    for key, (a, b) in {
        "agreement": ("ants", "fireants"),
        "control_ants_reseeded": ("ants", "ants_reseeded"),
        "control_ants_variant": ("ants", "ants_variant"),
        "fireants_vs_ants_variant": ("ants_variant", "fireants"),
    }.items():
        if {a, b} <= matrices.keys():
            out[key] = agreement(matrices[a], matrices[b], (a, b))
    return out


def main(argv: list[str] | None = None) -> int:
    from napari_invert.metrics import deformation_matrix

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--candidates", type=int, default=40)
    p.add_argument("--first", type=int, default=0, help="first subject (0-based) of the block: other pairs")
    p.add_argument("--sigma", type=float, default=1.5, help="stand-in blur, voxels")
    p.add_argument("--noise", type=float, default=0.1, help="stand-in noise SD (intensities in [0, 1])")
    p.add_argument(
        "--backend",
        nargs="+",
        choices=list(_RUNS),
        default=None,
        help="compute these runs only (ants_reseeded, ants_variant: the controls); default all",
    )
    p.add_argument("--control-seed", type=int, default=1, help="ANTs' MI seed of the control run")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--study", type=Path, default=None, help="use this study folder's reconstructions")
    p.add_argument(
        "--experiment", default=None, help="with --study: ARCH/TAP (default: the first trained one)"
    )
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    source: dict[str, Any]
    if args.study is not None:
        block = study_block(args.study, args.experiment, args.rows, args.candidates)
        images, masks, moving, spacing = block["images"], block["masks"], block["moving"], block["spacing"]
        source = {k: block[k] for k in ("experiment", "row_ids", "candidate_ids")} | {
            "study": str(args.study)
        }
    else:
        images, masks, voxel = _prepared(args.first + args.candidates, args.out / "prepared")
        images, masks = images[args.first :], masks[args.first :]
        moving = stand_ins(images[: args.rows], args.sigma, args.noise)
        spacing = (voxel,) * 3
        source = {
            "first_subject": args.first,
            "stand_in": {"sigma_voxels": args.sigma, "noise_sd": args.noise},
        }
    pairs = [(i, j) for i in range(args.rows) for j in range(args.candidates)]
    by_measure: dict[str, dict[str, np.ndarray]] = {"nonlinear": {}, "total": {}}
    for backend in args.backend or list(_RUNS):
        for measure, matrices in by_measure.items():  # the second measure comes from the cache
            values = deformation_matrix(
                images, moving, pairs, spacing=spacing, masks=masks,
                preset=VARIANT_PRESET if backend == "ants_variant" else "fast",
                workers=args.workers, cache_dir=args.out / "cache", progress=measure == "nonlinear",
                backend="fireants" if backend == "fireants" else "ants",
                seed=args.control_seed if backend == "ants_reseeded" else 0, measure=measure,
            )  # fmt: skip
            m = np.full((args.rows, args.candidates), np.nan)
            for (i, j), v in values.items():
                m[i, j] = v
            matrices[backend] = m
    records = [json.loads(f.read_text()) for f in (args.out / "cache").glob("*.json")]
    from napari_invert.metrics.registration.matrix import _preset_doc

    # seconds of this preset's entries only (the cache may hold other presets' results)
    presets = {
        "ants": ("fast", "ants"),
        "fireants": ("fast", "fireants"),
        "ants_variant": (VARIANT_PRESET, "ants"),
    }
    per_pair = {
        b: [r["seconds"] for r in records if r.get("preset") == _preset_doc(*presets[b])[1]]
        for b in by_measure["nonlinear"]
        if b in presets
    }
    doc: dict[str, Any] = {
        "rows": args.rows,
        "candidates": args.candidates,
        **source,
        "shape": list(images[0].shape),
        "spacing_mm": list(spacing),
        "seconds_per_pair_median": {b: float(np.median(v)) for b, v in per_pair.items() if v},
        "matrices": {b: m.tolist() for b, m in by_measure["nonlinear"].items()},
        **agreements(by_measure["nonlinear"]),
        "total": {
            "measure": "mean displacement of the whole transform (affine + non-linear), mm",
            "matrices": {b: m.tolist() for b, m in by_measure["total"].items()},
            **agreements(by_measure["total"]),
        },
    }
    write_json_atomic(args.out / "agreement.json", doc)
    brief = {k: v for k, v in doc.items() if k not in ("matrices", "total")}
    brief["total"] = {k: v for k, v in doc["total"].items() if k != "matrices"}
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
