"""CPU training-step variants, as same-run ratios: what makes a CPU step faster?

One segmenter training step (forward, Dice + cross-entropy, backward, Adam) of the
configuration's network on random volumes of its grid, one torch thread (as studies run
on a CPU: ``num_threads: 1``, one process per core), in these variants:

* ``contiguous`` — NCDHW memory, fp32, default Adam (the reference);
* ``channels_last_3d`` — NDHWC activations and weights (what :func:`train_segmenter`
  uses on the CPU today);
* ``channels_last_3d+fused_adam`` — plus ``Adam(fused=True)``: one kernel for every
  parameter instead of a Python loop over tensors (fewer round trips per step);
* ``channels_last_3d+bf16`` — plus bf16 autocast of the forward pass (the loss in fp32);
  its accuracy is reported as the relative error of the logits against fp32 on the same
  weights and input;
* ``channels_last_3d,no_onednn`` — with ``torch.backends.mkldnn`` disabled: how much
  oneDNN gives;
* ``channels_last_3d+compile`` — ``torch.compile`` of the network (Inductor; compile
  time reported separately, excluded from the step time); first grid and architecture
  only, as compiling costs minutes on a busy 2-core machine.

Variants are timed round-robin (``rounds`` rounds of ``steps`` steps each, after
``warmup`` untimed steps), so a change in machine load hits all of them alike; each
variant's figure is the median over rounds of the mean step time, and ``ratio`` is the
reference's median divided by the variant's (``> 1``: faster than ``contiguous``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from napari_invert.bench.machine import load_average

__all__ = ["VARIANTS", "bench_cpu_speed", "cpu_speed_case"]

Log = Callable[[str], None]

VARIANTS = (
    "contiguous",
    "channels_last_3d",
    "channels_last_3d+fused_adam",
    "channels_last_3d+bf16",
    "channels_last_3d,no_onednn",
    "channels_last_3d+compile",
)


def _variant_step(
    variant: str,
    arch: str,
    segmenter: dict[str, Any],
    n_classes: int,
    shape: list[int],
    batch: int,
    seed: int,
) -> tuple[Callable[[], float], Any, Any, Any]:
    """``(step, model, x, forward)`` of one variant (identical weights for every variant)."""
    import torch

    from napari_invert.config import SegmenterConfig
    from napari_invert.models import build_segmenter
    from napari_invert.models.training import segmentation_loss

    torch.manual_seed(seed)
    model = build_segmenter(arch, SegmenterConfig.model_validate(segmenter), n_classes=n_classes)
    channels_last = variant.startswith("channels_last_3d")
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand((batch, 1, *shape), generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, n_classes, (batch, 1, *shape), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=("fused_adam" in variant) or None)
    loss_fn = segmentation_loss()
    forward = torch.compile(model) if "compile" in variant else model
    bf16 = "bf16" in variant
    no_onednn = "no_onednn" in variant

    def step() -> float:
        ctx = torch.backends.mkldnn.flags(enabled=False) if no_onednn else contextlib.nullcontext()
        with ctx:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = forward(x)
            loss = loss_fn(logits.float(), y)
            loss.backward()
            opt.step()
        return float(loss.detach())

    return step, model, x, forward


def _bf16_error(model: Any, x: Any) -> float:
    """Relative L2 error of bf16-autocast logits against fp32 (same weights and input)."""
    import torch

    with torch.no_grad():
        ref = model(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    return float(torch.linalg.vector_norm(low - ref) / torch.linalg.vector_norm(ref))


def cpu_speed_case(
    arch: str,
    segmenter: dict[str, Any],
    n_classes: int,
    shape: list[int],
    batch: int,
    steps: int,
    rounds: int,
    warmup: int,
    variants: tuple[str, ...] = VARIANTS,
    threads: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds per training step of each variant, interleaved (see the module docstring)."""
    import torch

    from napari_invert.bench.timing import torch_threads

    out: dict[str, Any] = {"variants": {}}
    with torch_threads(threads):
        made: dict[str, Any] = {}
        for v in variants:
            try:
                step, model, x, _ = _variant_step(v, arch, segmenter, n_classes, shape, batch, seed)
                t0 = time.perf_counter()
                for _ in range(max(warmup, 1)):  # the first call compiles (torch.compile)
                    step()
                made[v] = step
                out["variants"][v] = {"warmup_s": time.perf_counter() - t0}
                if v == "channels_last_3d+bf16":
                    out["variants"][v]["bf16_logits_relative_error"] = _bf16_error(model, x)
            except Exception as exc:  # e.g. no C++ compiler for torch.compile
                out["variants"][v] = {"error": f"{type(exc).__name__}: {exc}"}
        per_round: dict[str, list[float]] = {v: [] for v in made}
        for _ in range(rounds):
            for v, step in made.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                per_round[v].append((time.perf_counter() - t0) / steps)
        out["torch_threads"] = torch.get_num_threads()
    ref = statistics.median(per_round["contiguous"]) if per_round.get("contiguous") else None
    for v, runs in per_round.items():
        med = statistics.median(runs)
        out["variants"][v].update(
            {"seconds_per_step": med, "runs_s": runs, "ratio": (ref / med) if ref else None}
        )
    return out


def bench_cpu_speed(
    grids: list[Any], steps: int, rounds: int, warmup: int, log: Log, compile_first: bool = True
) -> list[dict[str, Any]]:
    """:func:`cpu_speed_case` for every architecture of every grid (errors recorded)."""
    entries = []
    first = True
    for grid in grids:
        cfg = grid.config
        for arch in cfg.segmenter.architectures:
            variants = tuple(v for v in VARIANTS if "compile" not in v or (first and compile_first))
            first = False
            log(f"cpu speed: {grid.name} segmenter {arch} {tuple(grid.shape)}, {len(variants)} variants")
            entry: dict[str, Any] = {
                "grid": grid.name,
                "arch": arch,
                "shape": list(grid.shape),
                "batch_size": cfg.segmenter_training.batch_size,
                "n_classes": grid.n_classes,
                "load_average_before": load_average(),
            }
            try:
                entry.update(
                    cpu_speed_case(
                        arch,
                        cfg.segmenter.model_dump(mode="json"),
                        grid.n_classes,
                        list(grid.shape),
                        cfg.segmenter_training.batch_size,
                        steps,
                        rounds,
                        warmup,
                        variants,
                        threads=cfg.num_threads or 1,
                    )
                )
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["load_average_after"] = load_average()
            entries.append(entry)
    return entries
