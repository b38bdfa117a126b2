"""The training loop shared by the segmenters and the inversion decoders.

The segmenters' own trainer is :func:`napari_invert.models.segmenter_training.train_segmenter`.

:func:`run_training_loop` implements the conventions both trainers follow:

* **Determinism without RNG state on disk.** The mini-batch of step ``s`` and every random
  number drawn while computing it come from generators seeded with ``(seed, s)``: the
  samples follow a fresh permutation of the training set per epoch
  (:func:`batch_indices`), augmentation draws from ``numpy.random.default_rng([seed, s])``
  and torch's global RNG is forked and seeded per step (so dropout is reproducible and
  the caller's RNG is left untouched). A resumed run therefore replays exactly the steps
  an uninterrupted run would have taken (bit-identical on the CPU).
* **Resumable checkpoints** every ``config.checkpoint_every`` steps, when cancelled and at
  the end: ``stem.safetensors`` holds the trained module's tensors (``model/<name>``) and
  Adam's state (``optim/<param>/<key>``); ``stem.json`` holds ``{"kind":
  "training_state", "step", "total_steps", "finished", "train_config", "module": <what
  rebuilds the module>, "rows": <curve incl. batch indices>, "elapsed_s"}``. Calling a
  trainer again with the same stem resumes from it; a finished run loads the weights and
  returns at once. A checkpoint whose JSON exists but is corrupt, or whose weights are
  missing, raises :class:`~napari_invert.errors.CheckpointError` naming the file (it is
  never silently overwritten). Weights without their JSON are an unfinished write and are
  ignored.
* **Training to a validation plateau** (:mod:`napari_invert.models.validation`): a trainer
  may hold out part of its training list and hand the loop a
  :class:`~napari_invert.models.validation.Validation`; the loop scores it every
  ``validate_every`` steps and at the cap ``steps``, keeps the best weights (checkpoint
  tensors ``best/<name>``, loaded into the module when training ends), applies the
  learning-rate schedule (``warmup_steps``, ``lr_schedule``) and stops after
  ``patience`` steps without a ``min_delta`` improvement. The plateau bookkeeping is
  part of the checkpoint JSON (``"plateau"``, ``"stop_reason"``), so a resumed run
  continues identically.
* **Convergence record** (JSON, :func:`convergence_record`): steps run, why training
  stopped, best step and score, the baseline, the curve; rewritten at every evaluation,
  on cancel and at the end.
* **Curve CSV** ``step,loss,seconds`` (seconds = cumulative training wall time) written
  atomically with every checkpoint, on cancel and at the end.
* **Progress and cancellation**: a tqdm bar over steps, labelled with ``description``
  (the runner passes e.g. ``"skull_stripped fold 0 unet victim"``), shows the loss and
  the last validation score; ``on_step(step,
  total, loss)`` is called after every step (``step`` counts completed steps, 1-based);
  ``should_stop()`` is polled before every step and, when it returns True, the state is
  checkpointed and :class:`Cancelled` is raised.
* Every returned row records ``batch``: the indices (into the training list) of the
  samples that step used, so callers and tests can verify what a model was trained on.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
)
from napari_invert.config import TrainConfig
from napari_invert.errors import CheckpointError, NapariInvertError
from napari_invert.models.losses import IndexedDiceCELoss, segmentation_loss  # noqa: F401 (re-exported)
from napari_invert.models.validation import (
    PlateauState,
    Validation,
    lr_factor,
)

OnStep = Callable[[int, int, float], None]
ShouldStop = Callable[[], bool]

#: TrainConfig fields that may change between a run and its resumption
_RESUMABLE_CHANGES = ("steps", "checkpoint_every", "min_validation_dice", "min_dice_gain")


class Cancelled(NapariInvertError):
    """Training was stopped by ``should_stop()``; its state was checkpointed (if a stem was
    given) and calling the trainer again resumes where it stopped."""

    def __init__(self, message: str, step: int = 0, total: int = 0) -> None:
        super().__init__(message)
        self.step = step
        self.total = total


# -- deterministic sampling and augmentation ------------------------------------------------


def batch_indices(step: int, batch_size: int, n_samples: int, seed: int) -> list[int]:
    """Indices (into the training list) of the samples used at 0-based ``step``.

    Sample position ``p = step * batch_size + j`` belongs to epoch ``p // n_samples`` and
    takes entry ``p % n_samples`` of that epoch's permutation (seeded by ``(seed,
    epoch)``), so every sample is seen once per epoch and any step can be recomputed
    without state.
    """
    if n_samples < 1:
        raise ValueError("no training samples")
    out: list[int] = []
    perms: dict[int, np.ndarray] = {}
    for j in range(batch_size):
        p = step * batch_size + j
        epoch, pos = divmod(p, n_samples)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch, 7]).permutation(n_samples)
        out.append(int(perms[epoch][pos]))
    return out


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The numpy generator used for augmentation at 0-based ``step``."""
    return np.random.default_rng([seed, step, 11])


def _torch_seed(seed: int, step: int) -> int:
    return int(np.random.default_rng([seed, step, 13]).integers(0, 2**62))


# -- checkpoint (de)serialisation ------------------------------------------------------------


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, scalars


def _restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, Tensor],
    scalars: dict[str, Any],
    source: Path,
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim/"):
            continue
        _, pid, key = name.split("/", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in scalars.items():
        pid, key = name.split("/", 1)
        state.setdefault(int(pid), {})[key] = value
    current = optimizer.state_dict()
    n_params = sum(len(g["params"]) for g in current["param_groups"])
    if any(pid >= n_params for pid in state):
        raise CheckpointError(f"{source}: optimizer state does not fit the model")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
    except (ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{source}: optimizer state does not fit ({exc})") from None


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def write_curve(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``step,loss,seconds`` CSV atomically (loss: mean over the step's batch)."""
    lines = ["step,loss,seconds"]
    lines += [f"{int(r['step'])},{float(r['loss']):.8g},{float(r['seconds']):.3f}" for r in rows]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def read_training_state(stem: str | Path) -> dict[str, Any] | None:
    """The JSON part of a training checkpoint, or ``None`` when there is none yet."""
    _, meta_path = checkpoint_paths(stem)
    if not meta_path.is_file():
        return None
    _, meta = load_checkpoint(stem)
    return meta


# -- the loop ----------------------------------------------------------------------------------


def run_training_loop(
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    n_samples: int,
    compute_loss: Callable[[list[int], np.random.Generator], Tensor],
    config: TrainConfig,
    device: torch.device,
    module_meta: dict[str, Any],
    checkpoint_stem: str | Path | None = None,
    curve_path: str | Path | None = None,
    progress: bool = True,
    on_step: OnStep | None = None,
    should_stop: ShouldStop | None = None,
    description: str = "train",
    train_indices: Sequence[int] | None = None,
    validation: Validation | None = None,
    convergence_path: str | Path | None = None,
    record_info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run at most ``config.steps`` Adam steps of ``compute_loss`` on ``module`` (see
    module docs), stopping early on a validation plateau.

    ``compute_loss(batch, rng)`` receives the sample indices of the step and the step's
    numpy generator and returns a scalar float32 loss with its graph attached.
    ``train_indices``: the indices (into the caller's list of ``n_samples``) that may be
    trained on (default: all); batches are drawn from them and reported as such.
    ``validation``: scored every ``config.validate_every`` steps and at the last step;
    the best-scoring weights are kept (in the checkpoint as ``best/<name>``) and loaded
    into ``module`` when training ends; training stops after ``config.patience`` steps
    without an improvement of ``config.min_delta``. ``convergence_path``: the convergence
    record (JSON, see :func:`convergence_record`) rewritten at every evaluation and at the
    end; ``record_info`` is merged into it. Returns the curve rows ``{"step", "loss",
    "seconds", "batch"}`` of the steps run.
    """
    total = config.steps
    pool = list(range(n_samples)) if train_indices is None else [int(i) for i in train_indices]
    if not pool:
        raise ValueError(f"{description}: no training samples")
    rows: list[dict[str, Any]] = []
    start = 0
    elapsed_before = 0.0
    module_meta = _normalise(module_meta)
    state = PlateauState()
    best: dict[str, Tensor] | None = None
    stop_reason: str | None = None
    meta_path: Path | None = None
    if checkpoint_stem is not None:
        _, meta_path = checkpoint_paths(checkpoint_stem)

    def save(step: int) -> None:
        if checkpoint_stem is None:
            return
        opt_tensors, opt_scalars = _flatten_optimizer(optimizer)
        tensors = {f"model/{k}": v for k, v in module.state_dict().items()}
        if best is not None:
            tensors.update({f"best/{k}": v for k, v in best.items()})
        tensors.update(opt_tensors)
        save_checkpoint(
            checkpoint_stem,
            tensors,
            {
                "kind": "training_state",
                "description": description,
                "step": step,
                "total_steps": total,
                "finished": step >= total or stop_reason == "plateau",
                "stop_reason": stop_reason,
                "plateau": state.to_dict(),
                "train_config": config.model_dump(mode="json"),
                "module": module_meta,
                "optimizer_scalars": opt_scalars,
                "elapsed_s": rows[-1]["seconds"] if rows else elapsed_before,
                "rows": rows,
            },
        )

    def write(path_rows: list[dict[str, Any]], status: str) -> None:
        if curve_path is not None:
            write_curve(curve_path, path_rows)
        if convergence_path is not None:
            record = convergence_record(
                description, config, state, validation, path_rows, status, stop_reason, record_info
            )
            write_json_atomic(convergence_path, record)

    def finish() -> list[dict[str, Any]]:
        if best is not None:
            module.load_state_dict(best)
        write(rows, "finished")
        return rows

    if meta_path is not None and meta_path.is_file():
        tensors, meta = load_checkpoint(checkpoint_stem, device="cpu")
        if meta.get("kind") != "training_state":
            raise CheckpointError(f"{meta_path}: not a training checkpoint (kind={meta.get('kind')!r})")
        if _normalise(meta.get("module")) != module_meta:
            raise CheckpointError(
                f"{meta_path}: checkpoint was written for a different model; delete it to start over"
            )
        old = _filled_train_config(meta.get("train_config"))
        new = config.model_dump(mode="json")
        resumable = _RESUMABLE_CHANGES if config.lr_schedule != "cosine" else _RESUMABLE_CHANGES[1:]
        changed = [k for k in new if k not in resumable and _normalise(old.get(k)) != _normalise(new[k])]
        if changed:
            raise CheckpointError(
                f"{meta_path}: checkpoint was trained with different settings ({', '.join(changed)}); "
                "restore them or delete the checkpoint to start over"
            )
        model_tensors = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        load_module_state(module, model_tensors, meta_path)
        module.to(device)
        best_tensors = {k[len("best/") :]: v for k, v in tensors.items() if k.startswith("best/")}
        if best_tensors:
            best = {k: v.to(device) for k, v in best_tensors.items()}
        _restore_optimizer(optimizer, tensors, meta.get("optimizer_scalars", {}), meta_path)
        start = int(meta.get("step", 0))
        rows = list(meta.get("rows", []))[:start]
        elapsed_before = float(meta.get("elapsed_s", 0.0))
        state = PlateauState.from_dict(meta.get("plateau"))
        stop_reason = meta.get("stop_reason")
        if stop_reason == "cancelled":
            stop_reason = None
        if stop_reason == "plateau" or start >= total:
            rows = rows[:total]
            stop_reason = stop_reason or "max_steps"
            return finish()

    module.train()
    fork_devices: list[int] = []
    if device.type == "cuda":
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    pbar = tqdm(total=total, initial=start, desc=description, disable=not progress, unit="step", leave=False)
    t0 = time.perf_counter()
    scheduled = config.lr_schedule != "constant" or config.warmup_steps > 0
    try:
        for step in range(start, total):
            if should_stop is not None and should_stop():
                save(step)
                stop_reason = "cancelled"
                write(rows, "cancelled")
                raise Cancelled(
                    f"{description}: stopped after {step}/{total} steps"
                    + ("; run again to resume" if checkpoint_stem is not None else ""),
                    step=step,
                    total=total,
                )
            local = batch_indices(step, config.batch_size, len(pool), config.seed)
            batch = [pool[i] for i in local]
            rng = step_rng(config.seed, step)
            if scheduled:
                lr = config.lr * lr_factor(step, config, state.lr_scale)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            with torch.random.fork_rng(devices=fork_devices, device_type=device.type):
                torch.manual_seed(_torch_seed(config.seed, step))
                optimizer.zero_grad(set_to_none=True)
                loss = compute_loss(batch, rng)
                loss.backward()
                optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{description}: loss became {value} at step {step + 1}; lower the learning "
                    "rate (the last good checkpoint is kept)"
                )
            rows.append(
                {
                    "step": step + 1,
                    "loss": value,
                    "seconds": round(elapsed_before + time.perf_counter() - t0, 4),
                    "batch": batch,
                }
            )
            pbar.update(1)
            done = step + 1
            evaluated = False
            if validation is not None and (done % config.validate_every == 0 or done == total):
                score = _evaluate(module, validation)
                since = state.evals[-1]["step"] if state.evals else 0
                window = [r["loss"] for r in rows if r["step"] > since]
                state.evals.append(
                    {
                        "step": done,
                        "train_loss": float(np.mean(window)) if window else None,
                        "score": score,
                        "lr": float(optimizer.param_groups[0]["lr"]),
                    }
                )
                if state.update(done, score, validation.higher_is_better, config, validation.relative_delta):
                    best = {k: v.detach().clone() for k, v in module.state_dict().items()}
                if state.plateaued(done, config):
                    stop_reason = "plateau"
                evaluated = True
                pbar.set_postfix(loss=f"{value:.4f}", **{validation.metric: f"{score:.4f}"})
            else:
                pbar.set_postfix(loss=f"{value:.4f}")
            if on_step is not None:
                on_step(done, total, value)
            if stop_reason == "plateau" or done == total:
                stop_reason = stop_reason or "max_steps"
                save(done)
                break
            if done % config.checkpoint_every == 0:
                save(done)
                write(rows, "running")
            elif evaluated:
                write(rows, "running")
    finally:
        pbar.close()
    if stop_reason is None:  # zero steps to run
        stop_reason = "max_steps"
    return finish()


def _filled_train_config(old: dict[str, Any] | None) -> dict[str, Any]:
    """A stored train config with the defaults of keys added since it was written."""
    data = dict(old or {})
    try:
        return TrainConfig.model_validate(data).model_dump(mode="json")
    except ValueError:
        return data


@torch.no_grad()
def _evaluate(module: nn.Module, validation: Validation) -> float:
    was_training = module.training
    module.eval()
    try:
        return float(validation.score())
    finally:
        module.train(was_training)


def convergence_record(
    description: str,
    config: TrainConfig,
    state: PlateauState,
    validation: Validation | None,
    rows: Sequence[dict[str, Any]],
    status: str,
    stop_reason: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The convergence record of one trained network (JSON-serialisable).

    ``status``: ``running`` / ``finished`` / ``cancelled``; ``stop_reason``: ``plateau``
    (``patience`` steps without a ``min_delta`` improvement), ``max_steps`` (the cap
    ``steps``; with validation off this is the only reason) or ``cancelled``.
    ``curve``: one entry per evaluation ``{step, train_loss (mean since the previous
    evaluation), score, lr}``; ``best_*`` the best evaluation (its weights are the ones
    kept), ``baseline_score`` the no-learning reference on the same subjects.
    """
    record: dict[str, Any] = {
        "kind": "convergence",
        "label": description,
        "status": status,
        "stop_reason": stop_reason if status != "running" else None,
        "steps_run": int(rows[-1]["step"]) if rows else 0,
        "max_steps": config.steps,
        "seconds": float(rows[-1]["seconds"]) if rows else 0.0,
        "final_train_loss": float(rows[-1]["loss"]) if rows else None,
        "metric": validation.metric if validation else None,
        "higher_is_better": validation.higher_is_better if validation else None,
        "best_step": state.best_step if state.best_score is not None else None,
        "best_score": state.best_score,
        "final_score": state.evals[-1]["score"] if state.evals else None,
        "baseline_score": validation.baseline if validation else None,
        "baseline": validation.baseline_name if validation else "",
        "settings": {
            k: getattr(config, k)
            for k in (
                "lr",
                "lr_schedule",
                "warmup_steps",
                "batch_size",
                "validation_fraction",
                "validate_every",
                "patience",
                "min_delta",
            )
        },
        "curve": list(state.evals),
    }
    if validation is not None:
        record.update(_normalise(validation.info))
    if extra:
        record.update(_normalise(extra))
    if validation is not None and validation.judge is not None and status == "finished":
        record.update(_normalise(validation.judge(record)))
    return _normalise(record)


# -- training sets as tensors ----------------------------------------------------------------


def stack_images(images: Sequence[np.ndarray], what: str = "images") -> Tensor:
    """Stack ``N`` arrays ``(X, Y, Z)`` into a float32 tensor ``(N, 1, X, Y, Z)`` (CPU)."""
    if len(images) == 0:
        raise ValueError(f"{what}: empty list")
    shapes = {tuple(np.shape(a)) for a in images}
    if len(shapes) != 1:
        raise ValueError(f"{what}: all volumes must share one shape, got {sorted(shapes)}")
    shape = next(iter(shapes))
    if len(shape) != 3:
        raise ValueError(f"{what}: expected 3D arrays (X, Y, Z), got shape {shape}")
    arr = np.stack([np.asarray(a, dtype=np.float32) for a in images])[:, None]
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: contain NaN or Inf values")
    return torch.from_numpy(arr)


def stage_on_device(tensors: list[Tensor], device: torch.device, fraction: float = 0.25) -> list[Tensor]:
    """Where a training set lives during training.

    On CUDA the tensors are moved to GPU memory when together they take at most
    ``fraction`` of the free GPU memory (then no batch crosses the bus again), otherwise
    pinned host memory is used for fast asynchronous copies. On the CPU they are returned
    unchanged.
    """
    if device.type != "cuda":
        return tensors
    need = sum(t.numel() * t.element_size() for t in tensors)
    free, _ = torch.cuda.mem_get_info(device)
    if need <= fraction * free:
        return [t.to(device) for t in tensors]
    return [t.pin_memory() for t in tensors]
