"""FireANTs versus ANTs on the same pairs: does the GPU backend rank candidates the same way?

``python -m napari_invert.bench.registration_agreement --out DIR [--rows 10] [--candidates 40]``

Data: LPBA40 preprocessed exactly as ``sample_configs/quick_cpu.yaml`` (4 mm, percentile
normalisation, cropped to the brain masks) with
:func:`napari_invert.data.prepare.prepare_cohort`. Stand-in reconstructions of the first
``rows`` subjects: the original blurred (Gaussian, ``--sigma`` voxels) plus Gaussian noise
(``--noise`` SD), so the true original is not trivially the closest. Every stand-in is
registered to each of the first ``candidates`` originals (the true one among them) by each
backend's ``fast`` preset, with the mask of the original, through
:func:`napari_invert.metrics.deformation_matrix` (content-keyed cache in ``DIR/cache``:
resumable; run ``--backend ants`` and ``--backend fireants`` in two processes, then once
more without ``--backend`` to compute the agreement from the cache).

Reported (``DIR/agreement.json``): Pearson correlation of the mean displacement over all
pairs; Spearman correlation over all pairs; per row, the Spearman correlation of the two
candidate rankings (mean and minimum over rows); each backend's re-identification rank of
the true original per row and the Spearman correlation of those ranks (undefined, ``null``,
when a backend gives every row the same rank); seconds per pair of each backend.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["agreement", "main", "stand_ins"]


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


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Agreement of two ``(rows, candidates)`` matrices of mean displacement (mm)."""
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
        "true_rank_ants": ra,
        "true_rank_fireants": rb,
        "true_rank_spearman": None if constant else float(stats.spearmanr(ra, rb).statistic),
        "top1_ants": float(np.mean(np.asarray(ra) == 1)),
        "top1_fireants": float(np.mean(np.asarray(rb) == 1)),
    }


def main(argv: list[str] | None = None) -> int:
    from napari_invert.metrics import deformation_matrix

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--candidates", type=int, default=40)
    p.add_argument("--sigma", type=float, default=1.5, help="stand-in blur, voxels")
    p.add_argument("--noise", type=float, default=0.1, help="stand-in noise SD (intensities in [0, 1])")
    p.add_argument("--backend", choices=["ants", "fireants"], default=None, help="compute one backend only")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images, masks, voxel = _prepared(args.candidates, args.out / "prepared")
    moving = stand_ins(images[: args.rows], args.sigma, args.noise)
    pairs = [(i, j) for i in range(args.rows) for j in range(args.candidates)]
    matrices: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for backend in [args.backend] if args.backend else ["ants", "fireants"]:
        t0 = time.perf_counter()
        values = deformation_matrix(
            images, moving, pairs, spacing=(voxel,) * 3, preset="fast", masks=masks,
            workers=args.workers, cache_dir=args.out / "cache", progress=True, backend=backend,
        )  # fmt: skip
        seconds[backend] = time.perf_counter() - t0
        m = np.full((args.rows, args.candidates), np.nan)
        for (i, j), v in values.items():
            m[i, j] = v
        matrices[backend] = m
    records = [json.loads(f.read_text()) for f in (args.out / "cache").glob("*.json")]
    from napari_invert.metrics.registration.matrix import _preset_doc

    # seconds of this preset's entries only (the cache may hold other presets' results)
    per_pair = {
        b: [r["seconds"] for r in records if r.get("preset") == _preset_doc("fast", b)[1]] for b in matrices
    }
    doc: dict[str, Any] = {
        "rows": args.rows,
        "candidates": args.candidates,
        "shape": list(images[0].shape),
        "voxel_mm": voxel,
        "stand_in": {"sigma_voxels": args.sigma, "noise_sd": args.noise},
        "seconds_per_pair_median": {b: float(np.median(v)) for b, v in per_pair.items() if v},
        "matrices": {b: m.tolist() for b, m in matrices.items()},
    }
    if len(matrices) == 2:
        doc["agreement"] = agreement(matrices["ants"], matrices["fireants"])
    (args.out / "agreement.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in doc.items() if k != "matrices"}, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
