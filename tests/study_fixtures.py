"""Small synthetic, but valid, study folders for the evaluation/report tests.

:func:`make_synthetic_study` writes everything :class:`~napari_invert.study.layout.StudyFolder`
promises (config.yaml, cohort.json, splits.json, originals, masks, labels, priors,
reconstructions, training curves) without training anything, so the report code can be
tested quickly and with known answers:

* originals: smooth random blobs inside an ellipsoidal brain mask (values in [0, 1],
  0 outside the mask, i.e. "skull-stripped");
* reconstructions of a fold's private subjects: the original blurred with a Gaussian of
  ``sigma`` voxels plus Gaussian noise of SD ``noise`` (so re-identification works and
  quality decreases with ``sigma`` / ``noise``); ``sigma = noise = 0`` gives a perfect copy;
* reconstructions of a fold's attack subjects (the runner writes them too, "for
  reference") are pure noise, so code that wrongly uses them instead of the private fold's
  reconstruction fails the tests;
* an experiment given as ``"prior"`` instead of ``(sigma, noise)`` "reconstructs" every
  subject as its fold's prior (a decoder that learned only the mean image: no leakage);
* priors: the mean of the fold's attack originals (as the runner computes them);
* labels: three tissue classes from intensity tertiles inside the mask.

Segmenter checkpoints are written only when ``with_segmenters=True`` (needs
:mod:`napari_invert.models`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert.config import CohortConfig, StudyConfig, dump_config
from napari_invert.data.nifti import save_nifti
from napari_invert.study.layout import StudyFolder

#: Default experiments: (arch, tap) -> (blur sigma in voxels, noise SD).
DEFAULT_EXPERIMENTS: dict[tuple[str, str], tuple[float, float]] = {
    ("unet", "bottleneck+skips"): (0.6, 0.03),
    ("unet", "bottleneck"): (1.2, 0.08),
    ("segnet", "bottleneck+indices"): (1.0, 0.06),
}

N_CLASSES = 4  # background + 3 tissue classes


def _subject(rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic subject: (image float32 in [0, 1], mask bool)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radii = rng.uniform(0.72, 0.88, size=3)
    centre = rng.uniform(-0.05, 0.05, size=3)
    mask = np.sum(((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2, axis=0) <= 1.0
    blobs = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    blobs = (blobs - blobs[mask].min()) / (np.ptp(blobs[mask]) + 1e-8)
    image = np.where(mask, 0.2 + 0.8 * blobs, 0.0).astype(np.float32)
    return image, mask


def _labels(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    t1, t2 = np.percentile(image[mask], [33.3, 66.7])
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[mask & (image <= t1)] = 1
    labels[mask & (image > t1) & (image <= t2)] = 2
    labels[mask & (image > t2)] = 3
    return labels


def _curve_csv(rng: np.random.Generator, steps: int = 20) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "loss", "seconds"])
    for step in range(1, steps + 1):
        writer.writerow([step, f"{1.0 / step + 0.01 * rng.random():.5f}", f"{0.1 * step:.2f}"])
    return buf.getvalue()


def make_synthetic_study(
    root: str | Path,
    n_subjects: int = 8,
    n_folds: int = 2,
    shape: tuple[int, int, int] = (24, 24, 24),
    variants: Sequence[str] = ("skull_stripped",),
    experiments: Mapping[tuple[str, str], tuple[float, float] | str] | None = None,
    voxel_mm: float = 2.0,
    seed: int = 0,
    with_segmenters: bool = False,
    with_curves: bool = True,
    cohort_kind: str = "demo",
    deformation_sample_size: int = 2,
    num_threads: int | None = 1,
) -> Path:
    """Write a synthetic study folder into ``root`` and return ``root``.

    ``experiments`` maps ``(arch, tap)`` to ``(blur sigma (voxels), noise SD)`` of the
    reconstructions (or ``"prior"``); the default has three experiments of decreasing
    quality.
    """
    root = Path(root)
    folder = StudyFolder(root)
    experiments = dict(DEFAULT_EXPERIMENTS if experiments is None else experiments)
    archs = sorted({a for a, _ in experiments})
    taps: dict[str, list[str]] = {}
    for arch, tap in experiments:
        taps.setdefault(arch, []).append(tap)

    config = StudyConfig(
        name="synthetic",
        cohort=CohortConfig(kind="demo", n_subjects=n_subjects, seed=seed),
        folds=n_folds,
        preprocess={"variants": list(variants)},
        segmenter={"architectures": archs, "base_filters": 4, "levels": 2, "convs_per_level": 1},
        attack={"taps": taps},
        evaluation={
            "deformation": {
                "mode": "off",
                "preset": "fast",
                "sample_size": deformation_sample_size,
                "workers": 1,
            }
        },
        device="cpu",
        num_threads=num_threads,
    )
    write_text_atomic(folder.config_path, dump_config(config))

    ids = [f"S{i + 1:02d}" for i in range(n_subjects)]
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -0.5 * voxel_mm * np.asarray(shape)
    label_table = {"values": [1, 2, 3], "names": {"1": "low", "2": "mid", "3": "high"}}
    write_json_atomic(
        folder.cohort_path,
        {
            "name": "synthetic",
            "kind": cohort_kind,
            "root": str(root),
            "subject_ids": ids,
            "variants": list(variants),
            "label_table": label_table,
            "n_classes": N_CLASSES,
            "affine": affine.tolist(),
            "shape": list(shape),
        },
    )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_subjects)
    chunks = np.array_split(order, n_folds)
    folds = []
    for k, chunk in enumerate(chunks):
        private = sorted(ids[i] for i in chunk)
        attack = sorted(s for s in ids if s not in private)
        folds.append({"fold": k, "private": private, "attack": attack})
    write_json_atomic(folder.splits_path, {"seed": seed, "n_folds": n_folds, "folds": folds})

    for v, variant in enumerate(variants):
        vrng = np.random.default_rng([seed, v])
        images: dict[str, np.ndarray] = {}
        for sid in ids:
            image, mask = _subject(vrng, shape)
            if variant == "full_head":  # a crude "skull": a bright shell around the mask
                shell = ndimage.binary_dilation(mask, iterations=2) & ~mask
                image = np.where(shell, 0.9, image).astype(np.float32)
            images[sid] = image
            save_nifti(folder.original(variant, sid), image, affine)
            save_nifti(folder.mask(variant, sid), mask.astype(np.uint8), affine)
            save_nifti(folder.labels(variant, sid), _labels(image, mask), affine)
        for fold in folds:
            k = fold["fold"]
            prior = np.mean([images[s] for s in fold["attack"]], axis=0).astype(np.float32)
            save_nifti(folder.prior(variant, k), prior, affine)
            for (arch, tap), quality in experiments.items():
                for sid in fold["private"]:
                    if quality == "prior":
                        save_nifti(folder.recon(variant, k, arch, tap, sid), prior, affine)
                        continue
                    sigma, noise = quality
                    recon = images[sid]
                    if sigma > 0:
                        recon = ndimage.gaussian_filter(recon, sigma)
                    if noise > 0:
                        recon = recon + vrng.normal(0.0, noise, size=shape)
                    save_nifti(folder.recon(variant, k, arch, tap, sid), recon.astype(np.float32), affine)
                for sid in fold["attack"][:2]:  # attack-subject reconstructions: must be ignored
                    junk = vrng.normal(0.5, 0.3, size=shape).astype(np.float32)
                    save_nifti(folder.recon(variant, k, arch, tap, sid), junk, affine)
                if with_curves:
                    write_text_atomic(folder.decoder_curve(variant, k, arch, tap), _curve_csv(vrng))
            for arch in archs:
                if with_curves:
                    write_text_atomic(folder.segmenter_curve(variant, k, arch), _curve_csv(vrng))
                if with_segmenters:
                    _write_segmenter(folder, config, variant, k, arch, fold["private"])
    return root


def _write_segmenter(
    folder: StudyFolder, config: StudyConfig, variant: str, fold: int, arch: str, private: list[str]
) -> None:
    """An untrained (seeded) segmenter checkpoint, written with the models package API."""
    import torch

    from napari_invert.models import build_segmenter, save_segmenter

    torch.manual_seed(fold)
    model = build_segmenter(arch, config.segmenter, n_classes=N_CLASSES)
    save_segmenter(
        folder.segmenter_stem(variant, fold, arch),
        model,
        {"variant": variant, "fold": fold, "trained_on": private},
    )
