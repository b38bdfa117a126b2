"""``napari-invert bench``: speed and memory benchmarks -> ``results.json`` + ``results.md``.

What is measured (details in each case module, :mod:`napari_invert.bench.cases`):

1. **similarity matrices** (:mod:`~napari_invert.bench.cases.similarity`): windowed SSIM
   per pair and as ``N x M`` matrices, ours vs looped skimage and MONAI; masked Pearson
   correlation, ours vs a NumPy loop. Synthetic volumes at 96^3; real LPBA40 volumes at
   160x192x160 (full mode only). Agreement (max abs difference) is recorded.
2. **training** (:mod:`~napari_invert.bench.cases.training`): seconds per step and peak
   memory of the U-Net / SegNet segmenters and of the inversion decoder per tap option,
   at the grids of the ``demo`` and ``quick_cpu`` configurations, one spawned process
   per case.
3. **registration** (:mod:`~napari_invert.bench.cases.registration`): seconds per ANTs
   pair for each preset on the quick_cpu grid, projected to the deformation matrices.
4. **end to end** (:mod:`~napari_invert.bench.cases.studies`): read from study folders
   given as ``studies`` (never run here).

Modes: ``quick`` (fewer repeats, smaller sizes: a few minutes on 2 cores), full (the
default; tens of minutes), and ``tiny`` (a 16^3 smoke test of the machinery, seconds;
timings meaningless). Timings on a shared machine are noisy: the load average is
recorded at the start, at the end and before each case.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert.bench.machine import describe_machine, load_average
from napari_invert.bench.markdown import render_markdown

__all__ = ["SCHEMA_VERSION", "Plan", "plan_for", "run_benchmarks"]

#: Version of the ``results.json`` layout.
SCHEMA_VERSION = 1

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class SimilarityCase:
    """One volume size/source and the matrix sizes timed on it."""

    shape: Shape
    source: str  # "synthetic" | "lpba40"
    matrices: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Plan:
    """Sizes and repeat counts of one benchmark mode (see :func:`plan_for`)."""

    mode: str
    repeats: int
    ref_pairs: int
    matrix_budget_s: float
    similarity: tuple[SimilarityCase, ...]
    train_steps: int
    train_warmup: int
    isolate: bool
    grid_subjects: dict[str, int]
    reg_presets: tuple[str, ...]
    reg_repeats: dict[str, int] = field(default_factory=dict)
    reg_warmup: int = 1
    one_thread: bool = True
    #: CPU training-step variants (``cpu_speed`` section): steps per round, rounds, warm-up
    cpu_speed_steps: int = 3
    cpu_speed_rounds: int = 3
    cpu_speed_warmup: int = 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples as lists)."""
        return asdict(self)


def plan_for(quick: bool, tiny: bool = False) -> Plan:
    """The :class:`Plan` of a mode: ``tiny`` (tests), ``quick`` or full."""
    if tiny:
        return Plan(
            mode="tiny",
            repeats=1,
            ref_pairs=1,
            matrix_budget_s=60.0,
            similarity=(SimilarityCase((16, 16, 16), "synthetic", ((2, 3),)),),
            train_steps=1,
            train_warmup=1,
            isolate=False,
            grid_subjects={},
            reg_presets=("fast",),
            reg_repeats={"fast": 1},
            reg_warmup=0,
            cpu_speed_steps=1,
            cpu_speed_rounds=1,
            cpu_speed_warmup=1,
        )
    if quick:
        return Plan(
            mode="quick",
            repeats=3,
            ref_pairs=3,
            matrix_budget_s=150.0,
            similarity=(SimilarityCase((96, 96, 96), "synthetic", ((10, 40),)),),
            train_steps=3,
            train_warmup=1,
            isolate=True,
            grid_subjects={"quick_cpu": 2, "demo": 2},
            reg_presets=("fast", "paper"),
            reg_repeats={"fast": 3, "paper": 1},
            reg_warmup=1,
        )
    return Plan(
        mode="full",
        repeats=5,
        ref_pairs=5,
        matrix_budget_s=600.0,
        similarity=(
            SimilarityCase((96, 96, 96), "synthetic", ((10, 40), (40, 40))),
            SimilarityCase((160, 192, 160), "lpba40", ((10, 40), (40, 40))),
        ),
        train_steps=5,
        train_warmup=2,
        isolate=True,
        grid_subjects={"quick_cpu": 40, "demo": 2},
        reg_presets=("fast", "paper"),
        reg_repeats={"fast": 5, "paper": 3},
        reg_warmup=1,
    )


class _Log:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            load = load_average()
            tag = f"load {load[0]:.1f}" if load else ""
            print(
                f"[bench {time.perf_counter() - self.t0:7.1f}s {tag}] {message}", file=sys.stderr, flush=True
            )


def _volumes(case: SimilarityCase, log: _Log, notes: list[str]) -> Any:
    from napari_invert.bench.cases.volumes import lpba40_volumes, synthetic_volumes

    n = max(m for _, m in case.matrices)
    if case.source == "lpba40":
        log(f"loading {n} LPBA40 volumes")
        vs = lpba40_volumes(n)
        if vs is not None and vs.shape == case.shape:
            return vs
        notes.append(
            f"LPBA40 volumes unavailable or not {case.shape}: synthetic volumes used for that case instead"
        )
    log(f"making {n} synthetic volumes {case.shape}")
    return synthetic_volumes(case.shape, n)


def _similarity(
    plan: Plan,
    device: str,
    log: _Log,
    notes: list[str],
    ssim_out: list[dict[str, Any]],
    corr_out: list[dict[str, Any]],
    checkpoint: Callable[[], None],
) -> None:
    """Run the similarity cases, appending to ``ssim_out`` / ``corr_out`` and calling
    ``checkpoint()`` after each (partial results survive an interrupted run)."""
    import torch

    from napari_invert.bench.cases.similarity import bench_correlation, bench_ssim

    settings: list[int | None] = [None]
    if plan.one_thread and device == "cpu" and torch.get_num_threads() > 1:
        settings.append(1)
    for case in plan.similarity:
        try:
            vs = _volumes(case, log, notes)
        except Exception as exc:
            err = {"shape": list(case.shape), "source": case.source, "error": f"{type(exc).__name__}: {exc}"}
            ssim_out.append(err)
            corr_out.append(err)
            continue
        for threads in settings:
            for bench, out in ((bench_ssim, ssim_out), (bench_correlation, corr_out)):
                load = load_average()
                try:
                    res = bench(
                        vs,
                        case.matrices,
                        device,
                        plan.repeats,
                        plan.ref_pairs,
                        plan.matrix_budget_s,
                        log,
                        threads=threads,
                    )
                    res["load_average_before"] = load
                    res["load_average_after"] = load_average()
                except Exception as exc:  # record, keep going
                    res = {
                        "shape": list(case.shape),
                        "source": vs.source,
                        "threads": {"threads": threads},
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                out.append(res)
                checkpoint()
        del vs


def _grids(plan: Plan, studies: list[Path] | None, log: _Log, notes: list[str]) -> list[Any]:
    from napari_invert.bench.cases.grids import demo_grid, grid_from_study, quick_cpu_grid, tiny_grid

    if plan.mode == "tiny":
        return [tiny_grid()]
    from_studies = {}
    for path in studies or []:
        g = grid_from_study(path)
        if g is not None and g.name in ("demo", "quick_cpu") and g.name not in from_studies:
            from_studies[g.name] = g
    grids = []
    for name, make in (("demo", demo_grid), ("quick_cpu", quick_cpu_grid)):
        if name in from_studies:
            grids.append(from_studies[name])
            continue
        log(f"deriving the {name} grid ({plan.grid_subjects.get(name, 2)} subjects)")
        try:
            g = make(plan.grid_subjects.get(name, 2))
        except Exception as exc:
            notes.append(f"{name} grid could not be derived: {type(exc).__name__}: {exc}")
            continue
        if g is None:
            notes.append(f"{name}: sample config not found; its grid is skipped")
        else:
            grids.append(g)
    return grids


def _registration(plan: Plan, grids: list[Any], log: _Log) -> dict[str, Any] | None:
    from napari_invert.bench.cases.grids import quick_cpu_grid
    from napari_invert.bench.cases.registration import bench_registration
    from napari_invert.bench.cases.volumes import synthetic_volumes

    grid = next((g for g in grids if g.name in ("quick_cpu", "tiny")), None)
    if grid is None:
        return {"error": "no quick_cpu grid to register on"}
    samples = list(grid.samples)
    source = "prepared LPBA40 subjects (fixed = 2nd, moving = 1st)"
    if len(samples) < 2 and grid.name == "quick_cpu":
        alt = quick_cpu_grid(2)
        if alt is not None and len(alt.samples) >= 2:
            samples, source = alt.samples, source + f", window of 2 subjects {alt.shape}"
    if len(samples) < 2:
        shape = (24, 24, 24) if grid.name == "tiny" else grid.shape
        vs = synthetic_volumes(shape, 2)
        samples = [(vs.originals[k], vs.masks[k]) for k in range(2)]
        source = "synthetic volumes"
    (moving, _), (fixed, fixed_mask) = samples[0], samples[1]
    config = grid.config
    n_subjects = grid.n_private + grid.n_attack
    try:
        return bench_registration(
            fixed,
            moving,
            fixed_mask,
            grid.voxel_mm or 1.0,
            source,
            list(plan.reg_presets),
            dict(plan.reg_repeats),
            plan.reg_warmup,
            plan.isolate,
            config,
            n_subjects,
            log,
        )
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_benchmarks(
    quick: bool,
    device: str,
    out_dir: Path,
    studies: list[Path] | None = None,
    *,
    tiny: bool = False,
    progress: bool = True,
    sections: tuple[str, ...] = ("similarity", "training", "registration", "cpu_speed", "end_to_end"),
    plan: Plan | None = None,
) -> dict[str, Any]:
    """Run the benchmarks and write ``out_dir/results.json`` and ``out_dir/results.md``.

    Parameters
    ----------
    quick
        Fewer repeats and smaller sizes (96^3 and a 10 x 40 matrix only; minutes).
    device
        ``auto`` / ``cpu`` / ``cuda`` (CUDA: ours, MONAI and training run on the GPU;
        skimage, NumPy and ANTs always on the CPU).
    out_dir
        Output folder (created); both files are written atomically.
    studies
        Finished study folders whose recorded wall times are reported (end to end); the
        ``demo`` / ``quick_cpu`` rows say "not measured in this run" without them. A study
        of those configurations also supplies its exact grid shape.
    tiny
        Smoke-test mode (16^3 volumes, one run, in-process): for tests; timings meaningless.
    progress
        Log progress lines on stderr.
    sections
        Subset of ``similarity``, ``training``, ``registration``, ``cpu_speed`` (CPU
        training-step variants as same-run ratios; CPU device only), ``end_to_end``.
    plan
        A custom :class:`Plan` (e.g. ``dataclasses.replace(plan_for(False), similarity=...)``
        to rerun one case); overrides ``quick`` / ``tiny``.

    Returns
    -------
    dict
        The document written to ``results.json`` (``schema_version``, ``mode``,
        ``device``, ``machine``, ``plan``, ``cases``, ``notes``, load averages, ``seconds``,
        ``complete``). ``results.json`` is also rewritten after every similarity case and
        every section with ``complete: false``, so an interrupted run keeps what it measured.
    """
    from napari_invert.bench.cases.studies import end_to_end
    from napari_invert.device import resolve_device

    t0 = time.perf_counter()
    dev = str(resolve_device(device or "auto"))
    plan = plan if plan is not None else plan_for(quick, tiny)
    log = _Log(progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = [
        "Speed-up = reference seconds / our seconds, both measured in this run.",
        "CPU memory = peak RSS during the trainer call (Linux VmHWM, reset at its start) minus RSS "
        "just before it (see `memory.method`).",
    ]
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": plan.mode,
        "device": dev,
        "machine": describe_machine(dev),
        "plan": plan.to_dict(),
        "load_average_start": load_average(),
        "cases": {},
        "notes": notes,
        "complete": False,
    }

    def checkpoint() -> None:
        doc["seconds"] = time.perf_counter() - t0
        write_json_atomic(out_dir / "results.json", doc)

    log(f"bench {plan.mode} on {dev}; results -> {out_dir}")
    cases = doc["cases"]
    if "similarity" in sections:
        cases["ssim"], cases["correlation"] = [], []
        _similarity(plan, dev, log, notes, cases["ssim"], cases["correlation"], checkpoint)
    grids: list[Any] = []
    if "training" in sections or "registration" in sections or "cpu_speed" in sections:
        grids = _grids(plan, studies, log, notes)
        cases["grids"] = [g.to_dict() for g in grids]
    if "training" in sections:
        from napari_invert.bench.cases.training import bench_training

        cases["training"] = bench_training(grids, dev, plan.train_steps, plan.train_warmup, plan.isolate, log)
        checkpoint()
    if "registration" in sections:
        cases["registration"] = _registration(plan, grids, log)
        checkpoint()
    if "cpu_speed" in sections and dev == "cpu":
        from napari_invert.bench.cases.cpu_speed import bench_cpu_speed

        cases["cpu_speed"] = bench_cpu_speed(
            grids,
            plan.cpu_speed_steps,
            plan.cpu_speed_rounds,
            plan.cpu_speed_warmup,
            log,
            compile_first=plan.mode != "tiny",
        )
        checkpoint()
    if "end_to_end" in sections:
        cases["end_to_end"] = end_to_end(studies)
    doc["load_average_end"] = load_average()
    doc["complete"] = True
    doc["seconds"] = time.perf_counter() - t0
    load = [x for x in (doc["load_average_start"] or [])[:1] + (doc["load_average_end"] or [])[:1]]
    cores = doc["machine"].get("usable_cores") or 1
    if load and max(load) > cores + 0.5:
        notes.append(
            f"The machine was busy (1-min load average {max(load):.1f} on {cores} cores): absolute "
            "times are inflated and noisy; same-run ratios are more reliable than absolute figures."
        )
    write_json_atomic(out_dir / "results.json", doc)
    write_text_atomic(out_dir / "results.md", render_markdown(doc))
    log(f"done in {doc['seconds']:.0f} s: {out_dir / 'results.json'}, {out_dir / 'results.md'}")
    return doc
