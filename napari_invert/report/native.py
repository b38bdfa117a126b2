"""Scores on each subject's native grid (``evaluation.space: native``).

Why: the model grid is coarse (4 mm in ``quick_cpu``), where the 11-voxel Gaussian window
of the windowed SSIM spans about 44 mm, nearly a hemisphere. On the native grid (1 mm for
LPBA40) the same window spans 11 mm. The runner writes every private reconstruction on its
subject's native grid and affine (``<variant>/fold<k>/<arch>/<tap>/recon_native/<ID>``);
this module scores it against the cohort's source image of that subject and reports the
numbers **beside** the model-grid ones.

What is computed (true pairs only, to stay affordable on a CPU): for every private
reconstruction, correlation (Pearson r), global SSIM (paper's) and windowed SSIM against
its own original on the native grid, inside the native brain mask, and the same three
scores for the attacker's prior (the fold's mean image on the model grid, resampled
linearly onto the subject's native grid through the two affines) as the control.
Re-identification ranks are not recomputed on the native grid (that would need every
reconstruction x candidate pair at native resolution, and the candidates of a cohort
that is not co-registered live on different grids).

Cost, measured on LPBA40 at 1 mm (160x192x160) on one thread of the shared 2-core machine:
about 0.4 s (correlation) + 0.5 s (global SSIM) + 1.7 s (windowed SSIM on the mask's
bounding box) per pair, plus about 1 s to read and normalise the source image and 1.8 s to
resample the prior: for ``quick_cpu`` (40 subjects, 4 experiments + the prior) about 15 s
per subject, 10 minutes in all.

The native original is made comparable with the reconstruction as the preprocessing made
the model-grid original: skull-stripped with the cohort's brain mask for the
``skull_stripped`` variant, then the same intensity normalisation (``percentile`` with
the config's percentiles, ``zscore`` or ``none``) inside the mask, background 0 when
skull-stripped. N4 is not re-applied on the native grid (noted). With ``nyul`` the
landmarks are not stored in the study, so only the correlation (which ignores the
intensity scale) is computed. SSIM uses the model grid's data range ``L``.

Threat model: feature inversion (the attacker reads the encoder's outputs for a patient's
scan); the numbers are scores of the reconstruction of a training patient of the victim.
"""

from __future__ import annotations

import csv
import html
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert._io import write_text_atomic
from napari_invert.errors import DataError
from napari_invert.report.summary import ExperimentEvaluation, Log, finite_mean
from napari_invert.report.tables import Table, fmt_mean_sd, gain_of, mean_sd, metric_label
from napari_invert.study.results import StudyResults

if TYPE_CHECKING:
    from napari_invert.report.html import ReportContext, Section
    from napari_invert.report.matrices import VariantData

#: Metrics scored on the native grid, in report order.
NATIVE_METRICS: tuple[str, ...] = ("correlation", "ssim_global", "ssim")

NATIVE_CSV_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "fold",
    "variant",
    "arch",
    "tap",
    "metric",
    "native_value",
    "native_prior_value",
    "native_gain",
    "model_value",
    "native_shape",
    "native_voxel_mm",
)


@dataclass
class NativeRow:
    """One subject x experiment x metric on the native grid (``model_value``: same pair on
    the model grid, from the similarity matrix)."""

    subject_id: str
    fold: int
    variant: str
    arch: str
    tap: str
    metric: str
    native_value: float
    native_prior_value: float
    model_value: float
    native_shape: tuple[int, int, int]
    native_voxel_mm: tuple[float, float, float]

    @property
    def native_gain(self) -> float:
        return gain_of(self.metric, self.native_value, self.native_prior_value)


@dataclass
class NativeEvaluation:
    """Native-grid scores of every private reconstruction that has a native file."""

    rows: list[NativeRow] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model_voxel_mm: tuple[float, ...] = ()
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metrics": self.metrics,
            "notes": self.notes,
            "model_voxel_mm": list(self.model_voxel_mm),
            "n_rows": len(self.rows),
            "seconds": round(self.seconds, 2),
            "experiments": {},
        }
        for key, rows in _by_experiment(self.rows).items():
            out["experiments"][key] = {
                m: {
                    "native_mean": finite_mean(np.array([r.native_value for r in rows if r.metric == m])),
                    "native_prior_mean": finite_mean(
                        np.array([r.native_prior_value for r in rows if r.metric == m])
                    ),
                    "model_mean": finite_mean(np.array([r.model_value for r in rows if r.metric == m])),
                    "n": sum(r.metric == m for r in rows),
                }
                for m in self.metrics
            }
        return out


def _by_experiment(rows: Sequence[NativeRow]) -> dict[str, list[NativeRow]]:
    out: dict[str, list[NativeRow]] = {}
    for r in rows:
        out.setdefault(f"{r.variant}/{r.arch}/{r.tap}", []).append(r)
    return out


# ---------------------------------------------------------------------------------------
# native originals
# ---------------------------------------------------------------------------------------
def load_cohort(results: StudyResults) -> Any:  # -> napari_invert.data.cohort.Cohort
    """The study's source cohort (``cohort.json``: ``root`` and ``kind``)."""
    from napari_invert.data.cohort import Cohort

    root = results.cohort.get("root")
    if not root:
        raise DataError(results.folder.cohort_path, "no 'root' of the source cohort")
    kind = str(results.cohort.get("kind") or "auto")
    kind = "folder" if kind == "demo" else kind
    if not Path(root).exists():
        raise DataError(Path(root), "source cohort not found (moved or deleted?)")
    return Cohort.from_path(Path(root), kind=kind)


def native_original(subject: Any, variant: str, preprocess: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image float32, mask bool, affine 4x4)`` of a subject on its native grid, with the
    variant's skull stripping and the config's intensity normalisation (see module doc)."""
    from napari_invert.data.intensity import percentile_scale, skull_strip, zscore

    vols = subject.load()
    image = np.asarray(vols.image.array, dtype=np.float32)
    mask = np.asarray(vols.mask.array) > 0
    if variant == "skull_stripped":
        image = skull_strip(image, mask)
    try:
        if preprocess.normalisation == "percentile":
            low, high = preprocess.percentiles
            image = percentile_scale(image, mask, low, high)
        elif preprocess.normalisation == "zscore":
            image = zscore(image, mask)
    except ValueError as exc:
        raise DataError(subject.image_path, str(exc)) from None
    if variant == "skull_stripped":
        image = np.where(mask, image, 0.0).astype(np.float32)
    return image, mask, np.asarray(vols.image.affine, dtype=np.float64)


def model_to_native(
    volume: np.ndarray, model_affine: np.ndarray, native_affine: np.ndarray, native_shape: Sequence[int]
) -> np.ndarray:
    """Resample a model-grid volume onto a native grid (linear, 0 outside), via world mm."""
    from scipy import ndimage

    vox = np.linalg.inv(np.asarray(model_affine, dtype=np.float64)) @ np.asarray(
        native_affine, dtype=np.float64
    )
    return ndimage.affine_transform(
        np.asarray(volume, dtype=np.float32),
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=tuple(int(s) for s in native_shape),
        order=1,
        mode="constant",
        cval=0.0,
    )


def _mask_window(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The mask's bounding box grown by ``margin`` voxels (clipped to the volume)."""
    idx = np.nonzero(mask)
    return tuple(
        slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1))
        for i, n in zip(idx, mask.shape)
    )


def _scores(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray, data_range: float, metrics: Sequence[str]
) -> dict:
    """Scores of ``a`` (reconstruction or prior) against ``b`` (original) inside ``mask``.

    The windowed SSIM is computed on the mask's bounding box grown by the window radius:
    every masked voxel's window sees the same voxels as on the whole volume, so the value
    is the same (float32, as the model-grid matrices) at a fraction of the cost.
    """
    import torch

    from napari_invert import metrics as M
    from napari_invert.metrics.ssim_torch import WindowedSSIM

    out: dict[str, float] = {}
    for m in metrics:
        if m == "correlation":
            out[m] = float(M.pearson_correlation(a, b, mask))
        elif m == "ssim_global":
            out[m] = float(M.ssim_global(a, b, mask, data_range))
        elif m == "ssim":
            ssim = WindowedSSIM(data_range, device="cpu")
            w = _mask_window(mask, ssim.radius)
            if min(sl.stop - sl.start for sl in w) < ssim.win_size:
                w = tuple(slice(0, n) for n in mask.shape)
            out[m] = float(M.ssim_windowed(a[w], b[w], data_range, mask=mask[w], dtype=torch.float32))
    return out


# ---------------------------------------------------------------------------------------
# the evaluation
# ---------------------------------------------------------------------------------------
def evaluate_native(
    results: StudyResults,
    config: Any,
    evaluations: Sequence[ExperimentEvaluation],
    variants: Mapping[str, VariantData],
    log: Log,
) -> NativeEvaluation:
    """Score every private reconstruction's native file against its native original.

    Raises :class:`DataError` when the source cohort cannot be read; missing native
    reconstructions are noted and skipped.
    """
    import nibabel as nib

    t0 = time.perf_counter()
    pre = config.preprocess
    metrics = ["correlation"] if pre.normalisation == "nyul" else list(NATIVE_METRICS)
    out = NativeEvaluation(metrics=metrics, model_voxel_mm=tuple(results.spacing))
    if pre.normalisation == "nyul":
        out.notes.append(
            "normalisation 'nyul': its landmarks are not stored in the study, so the native originals "
            "cannot be put on the reconstructions' intensity scale; only the correlation (scale-free) "
            "is computed on the native grid."
        )
    if pre.n4:
        out.notes.append(
            "N4 bias correction was applied on the model grid only, not to the native originals."
        )
    cohort = load_cohort(results)
    by_id = {s.subject_id: s for s in cohort.subjects}
    folder = results.folder
    missing: list[str] = []
    for variant in sorted({ev.experiment.variant for ev in evaluations}):
        vd = variants[variant]
        evs = [ev for ev in evaluations if ev.experiment.variant == variant]
        ids = sorted({sid for ev in evs for sid in ev.row_ids}, key=vd.candidate_ids.index)
        for sid in ids:
            subject = by_id.get(sid)
            if subject is None:
                missing.append(f"{sid} (not in the source cohort)")
                continue
            image, mask, affine = native_original(subject, variant, pre)
            if not mask.any():
                raise DataError(subject.image_path, "empty brain mask on the native grid")
            voxel = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
            fold = results.fold_of(sid)
            model_affine = nib.load(str(folder.original(variant, sid))).affine
            prior = model_to_native(vd.priors[vd.prior_index(fold)], model_affine, affine, image.shape)
            prior_scores = _scores(prior, image, mask, vd.data_range, metrics)
            for ev in evs:
                if sid not in ev.row_ids:
                    continue
                e = ev.experiment
                path = folder.recon_native(variant, fold, e.arch, e.tap, sid)
                if not path.is_file():
                    missing.append(str(path.relative_to(folder.root)))
                    continue
                recon = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
                if recon.shape != image.shape:
                    raise DataError(
                        path, f"shape {recon.shape} differs from the native original {image.shape}"
                    )
                scores = _scores(recon, image, mask, vd.data_range, metrics)
                i = ev.row_ids.index(sid)
                for m in metrics:
                    model_value = float(ev.true_values(m)[i]) if m in ev.similarity else float("nan")
                    out.rows.append(
                        NativeRow(
                            sid,
                            fold,
                            variant,
                            e.arch,
                            e.tap,
                            m,
                            scores[m],
                            prior_scores[m],
                            model_value,
                            tuple(int(s) for s in image.shape),  # type: ignore[arg-type]
                            voxel,  # type: ignore[arg-type]
                        )
                    )
        log(f"native grid: {variant}, {len(ids)} subjects scored")
    if missing:
        out.notes.append(
            f"{len(missing)} native reconstruction(s) missing, skipped (e.g. {missing[0]}); rerun the study "
            "to write them."
        )
    out.seconds = time.perf_counter() - t0
    return out


def write_native_csv(path: Path, native: NativeEvaluation) -> Path:
    """``evaluation/native/scores.csv`` (columns :data:`NATIVE_CSV_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NATIVE_CSV_COLUMNS)
    for r in native.rows:
        w.writerow(
            [
                r.subject_id,
                r.fold,
                r.variant,
                r.arch,
                r.tap,
                r.metric,
                repr(r.native_value),
                repr(r.native_prior_value),
                repr(r.native_gain),
                repr(r.model_value),
                "x".join(str(s) for s in r.native_shape),
                "x".join(f"{v:g}" for v in r.native_voxel_mm),
            ]
        )
    return write_text_atomic(path, buf.getvalue())


def native_table(native: NativeEvaluation) -> Table:
    """Model grid vs native grid, per experiment and metric (mean ± SD over subjects)."""
    from napari_invert.report.tables import experiment_order
    from napari_invert.study.results import Experiment

    columns = ["Experiment", "Metric", "n", "model grid", "native grid", "native: prior", "native: gain"]
    csv_columns = [
        "variant",
        "arch",
        "tap",
        "metric",
        "n",
        "model_mean",
        "model_sd",
        "native_mean",
        "native_sd",
        "native_prior_mean",
        "native_prior_sd",
        "native_gain_mean",
    ]
    rows, crows = [], []
    groups: dict[Experiment, list[NativeRow]] = {}
    for r in native.rows:
        groups.setdefault(Experiment(r.variant, r.arch, r.tap), []).append(r)
    for e in sorted(groups, key=experiment_order):
        for m in native.metrics:
            rs = [r for r in groups[e] if r.metric == m]
            if not rs:
                continue
            mm, msd, n = mean_sd(r.model_value for r in rs)
            nm, nsd, _ = mean_sd(r.native_value for r in rs)
            pm, psd, _ = mean_sd(r.native_prior_value for r in rs)
            gm, _, _ = mean_sd(r.native_gain for r in rs)
            rows.append(
                [
                    e.label,
                    metric_label(m),
                    str(n),
                    fmt_mean_sd(mm, msd),
                    fmt_mean_sd(nm, nsd),
                    fmt_mean_sd(pm, psd),
                    "–" if not np.isfinite(gm) else f"{gm:+.2f}",
                ]
            )
            crows.append([e.variant, e.arch, e.tap, m, n, mm, msd, nm, nsd, pm, psd, gm])
    vox = native.rows[0].native_voxel_mm if native.rows else ()
    model = "x".join(f"{v:g}" for v in native.model_voxel_mm)
    model_mm = 11 * native.model_voxel_mm[0] if native.model_voxel_mm else float("nan")
    native_mm = 11 * vox[0] if vox else float("nan")
    notes = [
        "Threat model: feature inversion. Each private reconstruction against its own original only "
        "(true pairs; no re-identification ranks on the native grid), inside the native brain mask.",
        f"Model grid {model} mm; native grid {'x'.join(f'{v:g}' for v in vox) or '?'} mm. The windowed "
        f"SSIM's 11-voxel Gaussian window spans {model_mm:.0f} mm on the model grid and {native_mm:.0f} mm "
        "on the native grid.",
        "prior: the attacker's mean image (model grid) resampled onto the subject's native grid; "
        "gain = reconstruction minus prior.",
        *native.notes,
    ]
    return Table(
        "native",
        "Native grid vs model grid — reconstruction vs its true original",
        columns,
        rows,
        csv_columns,
        crows,
        notes,
    )


def native_section(ctx: ReportContext) -> Section | None:
    """Report section: the native-grid table (only when ``evaluation.space: native``)."""
    from napari_invert.report.html import Section

    table = ctx.tables.get("native")
    reason = ctx.summary.skipped.get("native")
    if table is None and reason is None:
        return None
    if table is not None:
        body = table.to_html()
    else:
        body = f'<div class="skipped">Not computed: {html.escape(str(reason))}</div>'
    return Section("native", "Native grid (evaluation.space: native)", body)
