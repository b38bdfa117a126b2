"""Training-step benchmarks: victim segmenters and inversion decoders.

Each case runs the project's own trainers (:func:`napari_invert.models.train_segmenter`,
:func:`napari_invert.attack.train_inversion_decoder`) for ``warmup + steps`` optimiser
steps on random volumes of the configuration's grid, with that configuration's network,
batch size, learning rate and augmentation, and reads the per-step seconds from the
returned curve (the trainers' own clock; untimed set-up such as the decoder's tap cache
is reported separately as ``setup_s``). Weights are random: a step costs the same
whatever the weights are.

Memory: each case runs in a fresh spawned process (when ``isolate``), so no memory kept
by an earlier case counts; ``peak_increment_bytes`` is the peak resident set size during
the trainer call (Linux ``VmHWM``, reset at its start) minus the resident set size just
before it (model and data already built); it includes the trainer's own staging (the
stacked images, the decoder's tap cache). On CUDA: ``torch.cuda.max_memory_allocated``
minus the allocation before training. See :mod:`napari_invert.bench.timing`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from napari_invert.bench.cases.grids import Grid
from napari_invert.bench.machine import load_average
from napari_invert.bench.timing import PeakMemory, median_of_steps, run_isolated, torch_threads

__all__ = ["bench_training", "decoder_case", "segmenter_case"]

Log = Callable[[str], None]

#: Checkpointing is off in the benchmark (no stem); this keeps the loop from trying.
_NO_CHECKPOINT = 10**9


def _random_images(shape: list[int], n: int, seed: int) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.random(tuple(shape), dtype=np.float32) for _ in range(n)]


def segmenter_case(
    arch: str,
    segmenter: dict[str, Any],
    train: dict[str, Any],
    n_classes: int,
    shape: list[int],
    n_images: int,
    steps: int,
    warmup: int,
    device: str,
    threads: int | None = None,
    seed: int = 0,
    isolated: bool = False,
) -> dict[str, Any]:
    """Seconds per segmenter training step and the training's peak memory (one case).

    ``segmenter`` / ``train``: :class:`SegmenterConfig` / :class:`TrainConfig` dicts;
    ``n_images`` random ``shape`` volumes with random labels ``0..n_classes-1`` (the fold's
    private set). ``threads``: torch CPU threads during the case (the config's
    ``num_threads``; ``None``: unchanged). ``isolated`` is set by
    :func:`~napari_invert.bench.timing.run_isolated` (recorded only). Returns
    ``seconds_per_step`` (stats), ``memory``, ``n_parameters``, ``torch_threads``,
    ``total_s``, ``setup_s``.
    """
    import numpy as np
    import torch

    from napari_invert.config import SegmenterConfig, TrainConfig
    from napari_invert.device import resolve_device
    from napari_invert.models import build_segmenter, train_segmenter

    dev = resolve_device(device)
    images = _random_images(shape, n_images, seed)
    rng = np.random.default_rng(seed + 1)
    labels = [rng.integers(0, n_classes, size=tuple(shape), dtype=np.int64) for _ in range(n_images)]
    torch.manual_seed(seed)
    model = build_segmenter(arch, SegmenterConfig.model_validate(segmenter), n_classes=n_classes)
    config = TrainConfig.model_validate(
        {**train, "steps": warmup + steps, "checkpoint_every": _NO_CHECKPOINT, "seed": seed,
         "validation_fraction": 0.0}  # fixed step count: no hold-out, no early stop
    )
    with torch_threads(threads):
        t0 = time.perf_counter()
        with PeakMemory(dev) as mem:
            rows = train_segmenter(model, images, labels, config, dev, progress=False)
        total = time.perf_counter() - t0
        used = torch.get_num_threads()
    stats = median_of_steps([r["seconds"] for r in rows], warmup)
    return {
        "seconds_per_step": stats.to_dict(),
        "memory": mem.to_dict(),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "torch_threads": used,
        "total_s": total,
        "setup_s": max(total - float(rows[-1]["seconds"]), 0.0),
    }


def decoder_case(
    arch: str,
    tap: str,
    segmenter: dict[str, Any],
    train: dict[str, Any],
    base_filters: int,
    loss: str,
    n_classes: int,
    shape: list[int],
    n_images: int,
    steps: int,
    warmup: int,
    device: str,
    threads: int | None = None,
    seed: int = 0,
    isolated: bool = False,
) -> dict[str, Any]:
    """Seconds per inversion-decoder training step for one tap option, and peak memory.

    The victim is a randomly initialised ``arch`` (frozen by the tapper); ``n_images``
    random attack volumes. With the config's ``augment: false`` the trainer caches every
    attack image's taps before the first step (as in a study); that set-up time is
    ``setup_s`` and its memory is part of the peak. ``threads``, ``isolated``: as for
    :func:`segmenter_case`.
    """
    import torch

    from napari_invert.attack import InversionDecoder, make_tapper, train_inversion_decoder
    from napari_invert.config import SegmenterConfig, TrainConfig
    from napari_invert.device import resolve_device
    from napari_invert.models import build_segmenter

    dev = resolve_device(device)
    images = _random_images(shape, n_images, seed)
    torch.manual_seed(seed)
    model = build_segmenter(arch, SegmenterConfig.model_validate(segmenter), n_classes=n_classes)
    tapper = make_tapper(model, tap)
    decoder = InversionDecoder.for_tapper(tapper, torch.from_numpy(images[0])[None, None], base_filters)
    config = TrainConfig.model_validate(
        {**train, "steps": warmup + steps, "checkpoint_every": _NO_CHECKPOINT, "seed": seed,
         "validation_fraction": 0.0}  # fixed step count: no hold-out, no early stop
    )
    with torch_threads(threads):
        t0 = time.perf_counter()
        with PeakMemory(dev) as mem:
            rows = train_inversion_decoder(tapper, decoder, images, config, dev, loss=loss, progress=False)  # type: ignore[arg-type]
        total = time.perf_counter() - t0
        used = torch.get_num_threads()
    stats = median_of_steps([r["seconds"] for r in rows], warmup)
    return {
        "seconds_per_step": stats.to_dict(),
        "memory": mem.to_dict(),
        "n_parameters": decoder.n_parameters(),
        "tap_cache": not config.augment,
        "torch_threads": used,
        "total_s": total,
        "setup_s": max(total - float(rows[-1]["seconds"]), 0.0),
    }


def bench_training(
    grids: list[Grid],
    device: str,
    steps: int,
    warmup: int,
    isolate: bool,
    log: Log,
    n_attack: int | None = None,
) -> list[dict[str, Any]]:
    """Every segmenter (per architecture) and decoder (per tap option) case of ``grids``.

    Each case uses its configuration's ``num_threads`` torch threads (as ``study`` does;
    unset: the benchmark process's count). ``n_attack`` overrides the attack-set size
    (default: the grid's fold size). A case that fails is recorded with ``error`` instead
    of stopping the benchmark.
    """
    entries: list[dict[str, Any]] = []
    for grid in grids:
        cfg = grid.config
        seg = cfg.segmenter.model_dump(mode="json")
        for arch in cfg.segmenter.architectures:
            cases: list[tuple[str, str | None, Callable[..., dict[str, Any]], dict[str, Any]]] = [
                (
                    "segmenter",
                    None,
                    segmenter_case,
                    {
                        "arch": arch,
                        "segmenter": seg,
                        "train": cfg.segmenter_training.model_dump(mode="json"),
                        "n_classes": grid.n_classes,
                        "shape": list(grid.shape),
                        "n_images": grid.n_private,
                        "steps": steps,
                        "warmup": warmup,
                        "device": device,
                        "threads": cfg.num_threads,
                    },
                )
            ]
            for tap in cfg.attack.taps.get(arch, []):
                cases.append(
                    (
                        "decoder",
                        tap,
                        decoder_case,
                        {
                            "arch": arch,
                            "tap": tap,
                            "segmenter": seg,
                            "train": cfg.attack.train.model_dump(mode="json"),
                            "base_filters": cfg.attack.decoder_base_filters,
                            "loss": cfg.attack.loss,
                            "n_classes": grid.n_classes,
                            "shape": list(grid.shape),
                            "n_images": n_attack or grid.n_attack,
                            "steps": steps,
                            "warmup": warmup,
                            "device": device,
                            "threads": cfg.num_threads,
                        },
                    )
                )
            for kind, tap, func, kwargs in cases:
                label = f"{grid.name} {kind} {arch}" + (f" {tap}" if tap else "")
                log(f"training: {label} {tuple(grid.shape)}")
                entry: dict[str, Any] = {
                    "grid": grid.name,
                    "kind": kind,
                    "arch": arch,
                    "tap": tap,
                    "shape": list(grid.shape),
                    "batch_size": kwargs["train"]["batch_size"],
                    "n_images": kwargs["n_images"],
                    "n_classes": grid.n_classes,
                    "device": device,
                    "isolated": isolate,
                    "load_average_before": load_average(),
                }
                try:
                    entry.update(run_isolated(func, kwargs, isolate))
                except Exception as exc:  # record and go on: one broken case must not hide the rest
                    entry["error"] = f"{type(exc).__name__}: {exc}"
                entry["load_average_after"] = load_average()
                entries.append(entry)
    return entries
