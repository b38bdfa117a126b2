"""Many registrations: :func:`register_pair` (one pair, either backend) and
:func:`deformation_matrix` (many pairs in parallel, content-keyed cache, resumable).

Backends (``backend=``): ``ants`` (antspyx, CPU; see
:mod:`~napari_invert.metrics.registration.ants`) and ``fireants`` (PyTorch, CUDA when
present; :mod:`~napari_invert.metrics.registration.fireants`). Pairs run in spawned
worker processes (one ITK / torch thread each; deterministic), or as units of work on an
executor (:mod:`napari_invert.execution`, e.g. Ray on a cluster): blocks of pairs whose
inputs are written as ``.npy`` files beside the cache, which the workers read and whose
results they write into the cache (so the cache folder must be on shared storage).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert._io import atomic_path
from napari_invert.metrics.registration.ants import RegistrationPreset, resolve_preset
from napari_invert.metrics.registration.common import (
    MEASURES,
    DeformationResult,
    array_digest,
    cache_paths,
    check_backend,
    check_measure,
    check_spacing,
    check_volume,
    load_cached,
    pair_key,
    store,
)

if TYPE_CHECKING:
    from napari_invert.execution import Executor
    from napari_invert.metrics.registration.fireants import FireantsPreset

__all__ = [
    "deformation_matrix",
    "magnitude_cache_path",
    "register_pair",
    "registration_block_unit",
]

#: Pairs per unit of work when ``deformation_matrix`` runs on an executor.
BLOCK_SIZE = 8


def register_pair(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preset: str | RegistrationPreset = "fast",
    mask: np.ndarray | None = None,
    seed: int = 0,
    keep_displacement: bool = True,
    backend: str = "ants",
    device: str | None = None,
) -> DeformationResult:
    """Register ``moving`` (reconstruction) to ``fixed`` (original): affine, then non-linear.

    Parameters
    ----------
    fixed
        ``(X, Y, Z)`` original (the reference grid of the result).
    moving
        ``(X, Y, Z)`` reconstruction, same shape and grid as ``fixed``.
    spacing
        Voxel size in mm along the three array axes (both images).
    preset
        ``"fast"``, ``"paper"`` (or a backend preset object).
    mask
        Optional boolean ``(X, Y, Z)`` — the original's brain mask — over which
        ``mean_norm`` is averaged. It does not restrict the registration itself.
    seed
        ANTs' MI sampling seed (>= 0; reproducible only with one ITK thread). FireANTs
        does not sample: recorded only.
    keep_displacement
        Return the displacement and magnitude arrays (else ``None``; saves memory).
    backend
        ``"ants"`` (MI affine, SyN CC) or ``"fireants"`` (CC affine, greedy CC).
    device
        FireANTs only: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when present).

    Returns
    -------
    DeformationResult
        ``mean_norm`` in mm (non-linear part only).
    """
    check_backend(backend)
    if backend == "fireants":
        from napari_invert.metrics.registration.fireants import register_pair_fireants

        return register_pair_fireants(
            fixed,
            moving,
            spacing,
            preset,
            mask,
            seed,
            keep_displacement,
            device=device,  # type: ignore[arg-type]
        )
    from napari_invert.metrics.registration.ants import register_pair_ants

    return register_pair_ants(fixed, moving, spacing, preset, mask, seed, keep_displacement)


def _preset_doc(preset: Any, backend: str) -> tuple[str, dict[str, Any], Any]:
    """``(name, cache-key dict, resolved preset)`` for ``backend``."""
    if backend == "fireants":
        from napari_invert.metrics.registration.fireants import resolve_fireants_preset

        pre: RegistrationPreset | FireantsPreset = resolve_fireants_preset(preset)
    else:
        pre = resolve_preset(preset)
    return pre.name, pre.as_dict(), pre


@contextlib.contextmanager
def _private_tempdir() -> Iterator[str]:
    """A fresh temporary folder that is also the process's temp dir while in use.

    Used around each task in the (single-threaded) worker processes: anything ANTs or
    antspyx writes to the temp dir (``mktemp`` prefixes, transforms) lands in a folder
    that is removed afterwards. Not used in the caller's process, where changing the
    process-wide temp dir could surprise other threads; there
    :func:`~napari_invert.metrics.registration.ants.register_pair_ants` only passes an
    ``outprefix`` inside its own ``TemporaryDirectory``.
    """
    with tempfile.TemporaryDirectory(prefix="napari_invert_ants_") as tmp:
        old_tempdir = tempfile.tempdir
        old_env = os.environ.get("TMPDIR")
        tempfile.tempdir = tmp
        os.environ["TMPDIR"] = tmp
        try:
            yield tmp
        finally:
            tempfile.tempdir = old_tempdir
            if old_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = old_env


def _init_worker() -> None:
    """Worker start-up: one ITK / BLAS thread (deterministic ANTs), before ``ants`` loads."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _run_task(task: dict[str, Any]) -> dict[str, Any]:
    with _private_tempdir():
        return _run_task_inner(task)


def _run_task_inner(task: dict[str, Any]) -> dict[str, Any]:
    res = register_pair(
        task["fixed"],
        task["moving"],
        spacing=task["spacing"],
        preset=task["preset"],
        mask=task["mask"],
        seed=task["seed"],
        keep_displacement=task["keep_magnitude"],
        backend=task.get("backend", "ants"),
        device=task.get("device"),
    )
    return {
        "mean_norm": res.mean_norm,
        "total_mean_norm": res.total_mean_norm,
        "affine": res.affine.tolist(),
        "seconds": res.seconds,
        "magnitude": res.magnitude,
    }


def magnitude_cache_path(
    cache_dir: str | Path,
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preset: str | RegistrationPreset = "fast",
    mask: np.ndarray | None = None,
    seed: int = 0,
    backend: str = "ants",
) -> Path:
    """Where :func:`deformation_matrix` stores the magnitude map (``.npy``) of one pair."""
    _, preset_doc, _ = _preset_doc(preset, check_backend(backend))
    key = pair_key(
        array_digest(check_volume(fixed, "fixed")),
        array_digest(check_volume(moving, "moving")),
        array_digest(None if mask is None else np.asarray(mask, dtype=bool)),
        check_spacing(spacing),
        preset_doc,
        int(seed),
        backend,
    )
    return cache_paths(Path(cache_dir), key)[1]


def deformation_matrix(
    fixed_list: Sequence[np.ndarray],
    moving_list: Sequence[np.ndarray],
    pairs: Iterable[tuple[int, int]],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preset: str | RegistrationPreset = "fast",
    masks: Sequence[np.ndarray] | None = None,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    seed: int = 0,
    save_magnitude: bool = False,
    backend: str = "ants",
    device: str | None = None,
    executor: Executor | None = None,
    measure: str = "nonlinear",
) -> dict[tuple[int, int], float]:
    """Register many (reconstruction, original) pairs in parallel; mean displacement per pair.

    Parameters
    ----------
    fixed_list
        ``M`` originals ``(X, Y, Z)`` (the fixed images).
    moving_list
        ``N`` reconstructions ``(X, Y, Z)`` (the moving images).
    pairs
        ``(i, j)`` = (index into ``moving_list``, index into ``fixed_list``), i.e. row and
        column of an ``(N, M)`` similarity matrix (see :func:`candidate_pairs`,
        :func:`pairs_to_matrix`).
    spacing
        Voxel size in mm (all images share one grid).
    preset
        ``"fast"``, ``"paper"`` or a :class:`RegistrationPreset`.
    masks
        ``None`` or ``M`` boolean masks, one per *original*; pair ``(i, j)`` averages over
        ``masks[j]``.
    workers
        Worker processes (spawned; one ITK thread each, so results are reproducible).
        ``0`` runs in this process (reproducible only if this process's ITK is
        single-threaded).
    cache_dir
        Optional folder; each pair's result is stored as ``<key>.json`` (and
        ``<key>_magnitude.npy`` with ``save_magnitude``), ``key`` hashing both arrays, the
        mask, spacing, preset and seed. Cached pairs are not recomputed (resumable).
    progress
        Show a tqdm progress bar.
    seed
        ANTs random seed for every pair.
    save_magnitude
        Also store the ``(X, Y, Z)`` float32 magnitude map per pair (needs ``cache_dir``).
    backend
        ``"ants"`` or ``"fireants"`` (see :func:`register_pair`); part of the cache key.
    device
        FireANTs only: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when present). With CUDA,
        use ``workers=0`` (registrations in this process, one after another on the GPU).
    executor
        Run blocks of :data:`BLOCK_SIZE` pairs as units on this executor (e.g. Ray)
        instead of ``workers`` processes; needs ``cache_dir`` on storage the workers see.
    measure
        ``"nonlinear"`` (default, the paper's metric): mean norm of the non-linear field
        after the affine stage; ``"total"``: mean displacement of the whole transform
        (affine + non-linear). The cache holds both, so switching costs no registration.
        Pitfall: the non-linear part depends on how a backend splits the work between
        its affine and non-linear stages; the order of wrong candidates by ``nonlinear``
        differs between ANTs and FireANTs (per-row Spearman 0.54 on LPBA40) and between
        two ANTs SyN settings, while ``total`` agrees across backends (0.92; BENCHMARKS.md).

    Returns
    -------
    dict[tuple[int, int], float]
        ``{(i, j): mm}`` (the ``measure``) for every requested pair (lower = more similar).

    Notes
    -----
    Workers are *spawned* (not forked: ITK thread pools and torch do not survive a
    fork), so a script calling this needs the usual ``if __name__ == "__main__":`` guard.
    A worker killed by a signal cannot remove its ``napari_invert_ants_*`` temporary
    folder; everything else is cleaned up, also on exceptions.
    """
    from tqdm.auto import tqdm

    pairs = [(int(i), int(j)) for i, j in pairs]
    if not pairs:
        return {}
    n_mov, n_fix = len(moving_list), len(fixed_list)
    for i, j in pairs:
        if not (0 <= i < n_mov and 0 <= j < n_fix):
            raise ValueError(f"pair ({i}, {j}) out of range for {n_mov} moving, {n_fix} fixed")
    if masks is not None and len(masks) != n_fix:
        raise ValueError(f"masks: {len(masks)} masks for {n_fix} fixed images")
    if save_magnitude and cache_dir is None:
        raise ValueError("save_magnitude=True needs a cache_dir to write the maps to")
    check_backend(backend)
    field = MEASURES[check_measure(measure)]
    if executor is not None and cache_dir is None:
        raise ValueError("deformation_matrix on an executor needs a cache_dir (results land there)")
    sp = check_spacing(spacing)
    pre_name, pre_doc, pre = _preset_doc(preset, backend)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    used_i = sorted({i for i, _ in pairs})
    used_j = sorted({j for _, j in pairs})
    mov = {i: check_volume(moving_list[i], f"moving_list[{i}]") for i in used_i}
    fix = {j: check_volume(fixed_list[j], f"fixed_list[{j}]") for j in used_j}
    shape = next(iter(fix.values())).shape
    for name, vols in (("moving_list", mov), ("fixed_list", fix)):
        for k, v in vols.items():
            if v.shape != shape:
                raise ValueError(f"{name}[{k}]: shape {v.shape} differs from {shape}")
    msk = {j: (None if masks is None else np.asarray(masks[j], dtype=bool)) for j in used_j}
    d_mov = {i: array_digest(v) for i, v in mov.items()}
    d_fix = {j: array_digest(v) for j, v in fix.items()}
    d_msk = {j: array_digest(m) for j, m in msk.items()}

    results: dict[tuple[int, int], float] = {}
    todo: list[tuple[tuple[int, int], str]] = []
    for pair in dict.fromkeys(pairs):
        i, j = pair
        key = pair_key(d_fix[j], d_mov[i], d_msk[j], sp, pre_doc, int(seed), backend)
        if cache is not None:
            value = load_cached(*cache_paths(cache, key), need_magnitude=save_magnitude, measure=measure)
            if value is not None:
                results[pair] = value
                continue
        todo.append((pair, key))

    def task(pair: tuple[int, int]) -> dict[str, Any]:
        i, j = pair
        return {
            "fixed": fix[j],
            "moving": mov[i],
            "mask": msk[j],
            "spacing": sp,
            "preset": pre,
            "seed": int(seed),
            "keep_magnitude": save_magnitude,
            "backend": backend,
            "device": device,
        }

    def finish(pair: tuple[int, int], key: str, out: dict[str, Any]) -> None:
        results[pair] = float(out[field])
        if cache is not None:
            store(*cache_paths(cache, key), key, pair, out, pre_doc, sp, int(seed), backend)

    if executor is not None and todo:
        assert cache is not None
        units = _block_units(
            todo,
            fix,
            mov,
            msk,
            d_fix,
            d_mov,
            d_msk,
            cache,
            {
                "spacing": list(sp),
                "preset": pre_name,
                "seed": int(seed),
                "backend": backend,
                "device": device,
                "save_magnitude": save_magnitude,
            },
        )
        executor.map(units, progress=progress, desc=f"{backend} ({pre_name}) blocks")
        for pair, key in todo:
            value = load_cached(*cache_paths(cache, key), need_magnitude=save_magnitude, measure=measure)
            if value is None:
                raise RuntimeError(
                    f"registration of moving {pair[0]} to fixed {pair[1]}: no result in {cache}"
                )
            results[pair] = value
        return {pair: results[pair] for pair in pairs}

    label = "ANTs" if backend == "ants" else "FireANTs"
    bar = tqdm(total=len(todo), desc=f"{label} ({pre_name})", disable=not progress)
    try:
        if workers <= 0:
            for pair, key in todo:
                finish(pair, key, _run_task(task(pair)))
                bar.update(1)
        elif todo:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init_worker
            ) as pool:
                futures: dict[Future[dict[str, Any]], tuple[tuple[int, int], str]] = {}
                pending = iter(todo)
                try:
                    # keep at most 2 tasks per worker in flight (bounded memory)
                    for _ in range(2 * workers):
                        item = next(pending, None)
                        if item is None:
                            break
                        futures[pool.submit(_run_task, task(item[0]))] = item
                    while futures:
                        done = next(iter(_as_completed(futures)))
                        pair, key = futures.pop(done)
                        try:
                            out = done.result()
                        except Exception as exc:
                            raise RuntimeError(
                                f"registration of moving {pair[0]} to fixed {pair[1]} failed: {exc}"
                            ) from exc
                        finish(pair, key, out)
                        bar.update(1)
                        item = next(pending, None)
                        if item is not None:
                            futures[pool.submit(_run_task, task(item[0]))] = item
                except KeyboardInterrupt:
                    _stop_registrations(pool, futures, [p for p, _ in pending])
                    raise
    finally:
        bar.close()
    return {pair: results[pair] for pair in pairs}


def _stop_registrations(
    pool: ProcessPoolExecutor,
    futures: dict[Future[dict[str, Any]], tuple[tuple[int, int], str]],
    not_submitted: list[tuple[int, int]],
) -> None:
    """Ctrl-C during the local worker pool: drop the queued pairs, interrupt the running
    registrations (killed after 20 s), say which, as the study's local pool does. Finished
    pairs are already in the cache: rerunning registers only the others."""
    from napari_invert.execution.local import stop_units

    def name(pair: tuple[int, int]) -> str:
        return f"register moving {pair[0]} to fixed {pair[1]}"

    queued = [name(pair) for f, (pair, _) in futures.items() if f.cancel()]
    running = {f: name(pair) for f, (pair, _) in futures.items() if not f.cancelled() and not f.done()}
    stop_units(pool, running, [*queued, *(name(p) for p in not_submitted)])


def _as_completed(futures: dict[Future[Any], Any]) -> Iterator[Future[Any]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
    yield from done


# --------------------------------------------------------------------------------------
# blocks of pairs as units of work (napari_invert.execution)
# --------------------------------------------------------------------------------------
def _write_input(folder: Path, digest: str, volume: np.ndarray | None) -> str:
    """Content-addressed ``.npy`` copy of one input (written once, atomically)."""
    path = folder / f"{digest}.npy"
    if volume is not None and not path.exists():
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, volume)
    return str(path)


def _block_units(
    todo: list[tuple[tuple[int, int], str]],
    fix: dict[int, np.ndarray],
    mov: dict[int, np.ndarray],
    msk: dict[int, np.ndarray | None],
    d_fix: dict[int, str],
    d_mov: dict[int, str],
    d_msk: dict[int, str],
    cache: Path,
    settings: dict[str, Any],
) -> list[Any]:
    from napari_invert.execution import Unit

    inputs = cache / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    cpus, gpus = 1.0, 0.0
    if settings["backend"] == "fireants" and settings["device"] == "cuda":
        gpus = 0.25  # small 3D registrations: four share one GPU
    units = []
    for start in range(0, len(todo), BLOCK_SIZE):
        block = todo[start : start + BLOCK_SIZE]
        pairs = []
        for (i, j), key in block:
            pairs.append(
                {
                    "pair": [i, j],
                    "key": key,
                    "fixed": _write_input(inputs, d_fix[j], fix[j]),
                    "moving": _write_input(inputs, d_mov[i], mov[i]),
                    "mask": None if msk[j] is None else _write_input(inputs, d_msk[j], msk[j]),
                }
            )
        units.append(
            Unit(
                key=f"registration:{block[0][1][:12]}+{len(block)}",
                func="napari_invert.metrics.registration.matrix:registration_block_unit",
                config={**settings, "pairs": pairs},
                paths={"cache": str(cache)},
                cpus=cpus,
                gpus=gpus,
            )
        )
    return units


def registration_block_unit(config: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """Unit of work: register a block of pairs, write each result into the cache folder.

    ``config``: ``spacing``, ``preset`` (name), ``seed``, ``backend``, ``device``,
    ``save_magnitude`` and ``pairs`` (``[{"pair": [i, j], "key", "fixed", "moving",
    "mask"}]``, the three arrays as ``.npy`` paths); ``paths``: ``{"cache": folder}``.
    Pairs already in the cache are skipped (a resumed block). ANTs runs with one ITK thread
    and the given seed, so a block gives bit-identical values on every backend and rerun
    (:mod:`~napari_invert.metrics.registration.threads`). Returns ``{"registered": n}``.
    """
    _init_worker()
    cache = Path(paths["cache"])
    sp = check_spacing(config["spacing"])
    _, pre_doc, pre = _preset_doc(config["preset"], config["backend"])
    with _single_thread_runner(config["backend"]) as run:
        return {"registered": _register_block(config, cache, sp, pre_doc, pre, run)}


@contextlib.contextmanager
def _single_thread_runner(backend: str) -> Iterator[Any]:
    """``run(task) -> out`` that registers with one ITK thread (reproducible ANTs).

    In this process when its ITK can still be pinned (a fresh worker); else, e.g. in a
    reused Ray worker or the caller's interpreter where ``ants`` already ran with more
    threads, in one spawned single-threaded child process for the whole block.
    """
    from napari_invert.metrics.registration.threads import pin_itk_single_thread

    if backend != "ants" or pin_itk_single_thread():
        yield _run_task
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker) as pool:
        yield lambda task: pool.submit(_run_task, task).result()


def _register_block(
    config: dict[str, Any],
    cache: Path,
    sp: tuple[float, float, float],
    pre_doc: dict[str, Any],
    pre: Any,
    run: Any,
) -> int:
    """Register the block's pairs not yet in ``cache`` with ``run``; return how many."""
    done = 0
    for item in config["pairs"]:
        json_path, npy_path = cache_paths(cache, item["key"])
        if load_cached(json_path, npy_path, need_magnitude=config["save_magnitude"]) is not None:
            continue
        task = {
            "fixed": np.load(item["fixed"]),
            "moving": np.load(item["moving"]),
            "mask": None if item["mask"] is None else np.load(item["mask"]),
            "spacing": sp,
            "preset": pre,
            "seed": int(config["seed"]),
            "keep_magnitude": bool(config["save_magnitude"]),
            "backend": config["backend"],
            "device": config["device"],
        }
        out = run(task)
        store(
            json_path,
            npy_path,
            item["key"],
            tuple(item["pair"]),
            out,
            pre_doc,
            sp,
            int(config["seed"]),
            config["backend"],
        )
        done += 1
    return done
