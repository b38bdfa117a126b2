"""Deformation magnitude: ANTs registration of a reconstruction to an original.

The paper's third metric (section 4.2.2): each reconstruction (*moving*) is registered to
its original and to every other original (*fixed*) with ANTs — first affinely with mutual
information, then non-linearly (SyN) with the cross-correlation metric — and the mean norm
of the displacement vectors is the (dis)similarity: the true original should need the
smallest deformation. Lower is better (use ``higher_is_better=False`` when ranking).

What is reported
----------------
``mean_norm`` is the mean Euclidean norm, in mm, of the **non-linear (SyN) displacement
field only** — the ``*1Warp.nii.gz`` field ANTs writes, which is what one visualises as
"the deformation field" (paper Fig. 7). The affine stage (global position, size and shear)
is *not* included: the paper registers "affinely ... then non-linear" and measures the
displacement of the non-linear registration, and including the affine part would let a
global shift or scale difference between a reconstruction and its original dominate the
score. The affine matrix and the mean norm of the full transform (affine + SyN) are
returned too (:attr:`DeformationResult.affine`, :attr:`DeformationResult.total_mean_norm`).

Conventions
-----------
Arrays are ``(X, Y, Z)`` in voxel order. They are given to ANTs with origin 0, identity
direction and the voxel ``spacing`` in mm, so the physical point of voxel ``p`` is
``p * spacing`` and displacement component ``k`` is along array axis ``k``, in mm. The
fixed-to-moving point map of the result is ``T(p) = A(p + u(p))`` with ``u`` the SyN
displacement on the fixed grid and ``A`` the affine (ANTs applies ``[warp, affine]``).

Presets (``fast`` / ``paper``), both MI affine then SyN with CC:

* ``fast``: affine 100x50x25 iterations at shrink 4,2,1 (smoothing 2,1,0 vox); SyN[0.2,
  3, 0] CC radius 2, 40x20x0 iterations at shrink 4,2,1 — antspyx's default SyN schedule:
  the finest optimised level is half resolution, the field is upsampled to the full grid.
  Seconds per pair at 3 mm.
* ``paper``: the standard ``antsRegistrationSyN.sh`` schedule — affine
  1000x500x250x100 at shrink 8,4,2,1 (smoothing 3,2,1,0 vox); SyN[0.1, 3, 0] CC radius 4,
  100x70x50x20 at shrink 8,4,2,1. Minutes per pair at 1 mm.

Determinism and resources
-------------------------
ANTs draws random MI samples; a fixed seed (``--random-seed``; ANTs treats 0 as "seed from
the clock", so ANTs gets ``seed + 1``) makes a run reproducible **only single-threaded**.
ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, when ANTs is first used in a
process: :func:`deformation_matrix` therefore runs registrations in spawned worker
processes with that variable set to 1 (bit-identical reruns); a :func:`register_pair` call
in your own process uses whatever ITK thread count that process has (set the variable
before importing ``ants`` to make it deterministic too). Every registration writes its
transforms to its own temporary folder, which is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import atomic_path, read_json, write_json_atomic
from napari_invert.errors import DataError

__all__ = [
    "PRESETS",
    "DeformationResult",
    "RegistrationPreset",
    "candidate_pairs",
    "deformation_matrix",
    "magnitude_cache_path",
    "pairs_to_matrix",
    "register_pair",
]

#: Bumped whenever the computation changes, so stale cache entries are not reused.
CACHE_VERSION = 1


@dataclass(frozen=True)
class RegistrationPreset:
    """Parameters of the two ANTs stages (affine MI, then SyN CC).

    Iteration tuples are per resolution level, coarse to fine; the SyN shrink factors are
    ``2**(levels-1) .. 1`` with smoothing ``levels-1 .. 0`` voxels (antspyx convention).
    """

    name: str
    aff_iterations: tuple[int, ...]
    aff_shrink_factors: tuple[int, ...]
    aff_smoothing_sigmas: tuple[int, ...]
    reg_iterations: tuple[int, ...]
    syn_radius: int = 4
    grad_step: float = 0.2
    flow_sigma: float = 3.0
    total_sigma: float = 0.0
    aff_metric: str = "mattes"
    aff_bins: int = 32
    aff_sampling_rate: float = 0.2
    syn_metric: str = "CC"

    def as_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict (used in cache keys)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


PRESETS: dict[str, RegistrationPreset] = {
    "fast": RegistrationPreset(
        name="fast",
        aff_iterations=(100, 50, 25),
        aff_shrink_factors=(4, 2, 1),
        aff_smoothing_sigmas=(2, 1, 0),
        reg_iterations=(40, 20, 0),
        syn_radius=2,
        grad_step=0.2,
    ),
    "paper": RegistrationPreset(
        name="paper",
        aff_iterations=(1000, 500, 250, 100),
        aff_shrink_factors=(8, 4, 2, 1),
        aff_smoothing_sigmas=(3, 2, 1, 0),
        reg_iterations=(100, 70, 50, 20),
        syn_radius=4,
        grad_step=0.1,
    ),
}


@dataclass
class DeformationResult:
    """Outcome of one registration (reconstruction -> original).

    Attributes
    ----------
    displacement
        ``(X, Y, Z, 3)`` float32, mm: the non-linear (SyN) displacement ``u(p)`` at every
        voxel ``p`` of the fixed grid, components along the array axes. May be ``None``
        when not kept (:func:`deformation_matrix` workers).
    magnitude
        ``(X, Y, Z)`` float32, mm: ``|u(p)|`` (the map one overlays, paper Fig. 7).
    mean_norm
        Mean of ``magnitude`` inside the mask (whole volume without mask), mm. The
        reported metric; lower = more similar.
    affine
        ``(4, 4)`` float64 affine stage, fixed physical mm -> moving physical mm.
    total_mean_norm
        Mean norm (mm, same voxels) of the full displacement ``A(p + u(p)) - p``.
    preset, seed, seconds
        Preset name, seed used, wall-clock seconds of the registration.
    """

    displacement: np.ndarray | None
    magnitude: np.ndarray | None
    mean_norm: float
    affine: np.ndarray
    total_mean_norm: float
    preset: str
    seed: int
    seconds: float

    @property
    def affine_translation(self) -> np.ndarray:
        """``(3,)`` mm: the translation ``t`` of the affine stage ``T(p) = A p + t``.

        Physical points are ``voxel index * spacing`` (origin 0), so for a pure shift this
        is the shift itself: if the moving image is the fixed one moved by ``+d`` mm, the
        content at fixed point ``p`` is at ``p + d`` in the moving image and ``t = d``.
        """
        return self.affine[:3, 3].copy()


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _resolve_preset(preset: str | RegistrationPreset) -> RegistrationPreset:
    if isinstance(preset, RegistrationPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown registration preset '{preset}' (choose from {sorted(PRESETS)})") from None


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing}")
    return sp  # type: ignore[return-value]


def _check_volume(v: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim != 3:
        raise ValueError(f"{name}: expected a 3D volume (X, Y, Z), got shape {v.shape}")
    v = np.ascontiguousarray(v, dtype=np.float32)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: contains NaN or Inf")
    return v


@contextlib.contextmanager
def _private_tempdir() -> Iterator[str]:
    """A fresh temporary folder that is also the process's temp dir while in use.

    Used around each task in the (single-threaded) worker processes: anything ANTs or
    antspyx writes to the temp dir (``mktemp`` prefixes, transforms) lands in a folder
    that is removed afterwards. Not used in the caller's process, where changing the
    process-wide temp dir could surprise other threads; there :func:`register_pair` only
    passes an ``outprefix`` inside its own ``TemporaryDirectory``.
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


@contextlib.contextmanager
def _ants_seed(seed: int) -> Iterator[None]:
    import ants

    old = ants.config._random_seed
    ants.config._random_seed = int(seed) + 1  # ANTs: 0 means "seed from the clock"
    try:
        yield
    finally:
        ants.config._random_seed = old


def _read_affine(path: str) -> np.ndarray:
    """ANTs/ITK ``.mat`` (MatrixOffsetTransformBase) -> 4x4 physical-space matrix."""
    import ants

    tx = ants.read_transform(path)
    params = np.asarray(tx.parameters, dtype=np.float64)
    center = np.asarray(tx.fixed_parameters, dtype=np.float64)
    mat = params[:9].reshape(3, 3)
    trans = params[9:12]
    out = np.eye(4)
    out[:3, :3] = mat
    out[:3, 3] = trans + center - mat @ center
    return out


# --------------------------------------------------------------------------------------
# one pair
# --------------------------------------------------------------------------------------
def register_pair(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preset: str | RegistrationPreset = "fast",
    mask: np.ndarray | None = None,
    seed: int = 0,
    keep_displacement: bool = True,
) -> DeformationResult:
    """Register ``moving`` (reconstruction) to ``fixed`` (original): affine MI, then SyN CC.

    Parameters
    ----------
    fixed
        ``(X, Y, Z)`` original (the reference grid of the result).
    moving
        ``(X, Y, Z)`` reconstruction, same shape and grid as ``fixed``.
    spacing
        Voxel size in mm along the three array axes (both images).
    preset
        ``"fast"``, ``"paper"`` or a :class:`RegistrationPreset`.
    mask
        Optional boolean ``(X, Y, Z)`` — the original's brain mask — over which
        ``mean_norm`` is averaged. It does not restrict the registration itself.
    seed
        Random seed of ANTs' MI sampling (>= 0). Reproducible only with one ITK thread
        (see module docstring).
    keep_displacement
        Return the displacement and magnitude arrays (else ``None``; saves memory).

    Returns
    -------
    DeformationResult
        ``mean_norm`` in mm (non-linear part only; see module docstring).

    Notes
    -----
    ANTs writes its transforms under an ``outprefix`` inside a private
    ``tempfile.TemporaryDirectory``, which is removed before returning, also on error.
    """
    import ants

    fixed = _check_volume(fixed, "fixed")
    moving = _check_volume(moving, "moving")
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must have one shape")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != fixed.shape:
            raise ValueError(f"mask shape {mask.shape} differs from fixed {fixed.shape}")
    sp = _check_spacing(spacing)
    pre = _resolve_preset(preset)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")

    t0 = time.perf_counter()
    fi = ants.from_numpy(fixed, origin=(0.0, 0.0, 0.0), spacing=sp)
    mi = ants.from_numpy(moving, origin=(0.0, 0.0, 0.0), spacing=sp)
    with tempfile.TemporaryDirectory(prefix="napari_invert_ants_") as tmp, _ants_seed(seed):
        aff = ants.registration(
            fi,
            mi,
            type_of_transform="Affine",
            outprefix=os.path.join(tmp, "aff_"),
            aff_metric=pre.aff_metric,
            aff_sampling=pre.aff_bins,
            aff_random_sampling_rate=pre.aff_sampling_rate,
            aff_iterations=pre.aff_iterations,
            aff_shrink_factors=pre.aff_shrink_factors,
            aff_smoothing_sigmas=pre.aff_smoothing_sigmas,
        )
        syn = ants.registration(
            fi,
            mi,
            type_of_transform="SyNOnly",
            initial_transform=aff["fwdtransforms"][0],
            outprefix=os.path.join(tmp, "syn_"),
            syn_metric=pre.syn_metric,
            syn_sampling=pre.syn_radius,
            reg_iterations=pre.reg_iterations,
            grad_step=pre.grad_step,
            flow_sigma=pre.flow_sigma,
            total_sigma=pre.total_sigma,
        )
        warp_files = [f for f in syn["fwdtransforms"] if f.endswith("Warp.nii.gz")]
        affine_files = [f for f in syn["fwdtransforms"] if f.endswith(".mat")]
        if len(warp_files) != 1 or len(affine_files) != 1:
            raise RuntimeError(f"unexpected ANTs outputs: {syn['fwdtransforms']}")
        u = ants.image_read(warp_files[0]).numpy().astype(np.float32)
        affine = _read_affine(affine_files[0])
    seconds = time.perf_counter() - t0
    if u.shape != (*fixed.shape, 3):
        raise RuntimeError(f"displacement field has shape {u.shape}, expected {(*fixed.shape, 3)}")

    magnitude = np.sqrt(np.sum(u.astype(np.float64) ** 2, axis=-1)).astype(np.float32)
    sel = mask if mask is not None else np.ones(fixed.shape, dtype=bool)
    mean_norm = float(magnitude[sel].mean(dtype=np.float64)) if sel.any() else float("nan")
    # full transform A(p + u(p)) - p on the selected voxels
    pts = np.argwhere(sel).astype(np.float64) * np.asarray(sp)
    q = pts + u[sel].astype(np.float64)
    total = q @ affine[:3, :3].T + affine[:3, 3] - pts
    total_mean_norm = float(np.linalg.norm(total, axis=1).mean()) if len(pts) else float("nan")
    return DeformationResult(
        displacement=u if keep_displacement else None,
        magnitude=magnitude if keep_displacement else None,
        mean_norm=mean_norm,
        affine=affine,
        total_mean_norm=total_mean_norm,
        preset=pre.name,
        seed=int(seed),
        seconds=seconds,
    )


# --------------------------------------------------------------------------------------
# many pairs
# --------------------------------------------------------------------------------------
def _array_digest(v: np.ndarray | None) -> str:
    if v is None:
        return "none"
    v = np.ascontiguousarray(v)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(v.dtype).encode())
    h.update(str(v.shape).encode())
    h.update(memoryview(v).cast("B"))
    return h.hexdigest()


def _pair_key(
    fixed_digest: str,
    moving_digest: str,
    mask_digest: str,
    spacing: tuple[float, float, float],
    preset: RegistrationPreset,
    seed: int,
) -> str:
    payload = json.dumps(
        {
            "version": CACHE_VERSION,
            "fixed": fixed_digest,
            "moving": moving_digest,
            "mask": mask_digest,
            "spacing": list(spacing),
            "preset": preset.as_dict(),
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _init_worker() -> None:
    """Worker start-up: one ITK / BLAS thread (deterministic ANTs), before ``ants`` loads."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"


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
    )
    return {
        "mean_norm": res.mean_norm,
        "total_mean_norm": res.total_mean_norm,
        "affine": res.affine.tolist(),
        "seconds": res.seconds,
        "magnitude": res.magnitude,
    }


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.json", cache_dir / f"{key}_magnitude.npy"


def _load_cached(json_path: Path, npy_path: Path, need_magnitude: bool) -> float | None:
    if not json_path.exists() or (need_magnitude and not npy_path.exists()):
        return None
    try:
        rec = read_json(json_path)
        value = rec["mean_norm"]
        return float("nan") if value is None else float(value)
    except (DataError, KeyError, TypeError, ValueError):
        return None  # unreadable entry: recompute and overwrite


def _store(
    json_path: Path,
    npy_path: Path,
    key: str,
    pair: tuple[int, int],
    out: dict[str, Any],
    preset: RegistrationPreset,
    spacing: tuple[float, float, float],
    seed: int,
) -> None:
    if out.get("magnitude") is not None:
        with atomic_path(npy_path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(out["magnitude"], dtype=np.float32))
    rec = {
        "key": key,
        "pair": list(pair),
        "mean_norm": None if not math.isfinite(out["mean_norm"]) else out["mean_norm"],
        "total_mean_norm": None if not math.isfinite(out["total_mean_norm"]) else out["total_mean_norm"],
        "affine": out["affine"],
        "seconds": out["seconds"],
        "spacing": list(spacing),
        "preset": preset.as_dict(),
        "seed": seed,
        "cache_version": CACHE_VERSION,
    }
    write_json_atomic(json_path, rec)


def magnitude_cache_path(
    cache_dir: str | Path,
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preset: str | RegistrationPreset = "fast",
    mask: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Where :func:`deformation_matrix` stores the magnitude map (``.npy``) of one pair."""
    key = _pair_key(
        _array_digest(_check_volume(fixed, "fixed")),
        _array_digest(_check_volume(moving, "moving")),
        _array_digest(None if mask is None else np.asarray(mask, dtype=bool)),
        _check_spacing(spacing),
        _resolve_preset(preset),
        int(seed),
    )
    return _cache_paths(Path(cache_dir), key)[1]


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
) -> dict[tuple[int, int], float]:
    """Register many (reconstruction, original) pairs in parallel; mean SyN norm per pair.

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

    Returns
    -------
    dict[tuple[int, int], float]
        ``{(i, j): mean_norm_mm}`` for every requested pair (lower = more similar).

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
    sp = _check_spacing(spacing)
    pre = _resolve_preset(preset)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    used_i = sorted({i for i, _ in pairs})
    used_j = sorted({j for _, j in pairs})
    mov = {i: _check_volume(moving_list[i], f"moving_list[{i}]") for i in used_i}
    fix = {j: _check_volume(fixed_list[j], f"fixed_list[{j}]") for j in used_j}
    shape = next(iter(fix.values())).shape
    for name, vols in (("moving_list", mov), ("fixed_list", fix)):
        for k, v in vols.items():
            if v.shape != shape:
                raise ValueError(f"{name}[{k}]: shape {v.shape} differs from {shape}")
    msk = {j: (None if masks is None else np.asarray(masks[j], dtype=bool)) for j in used_j}
    d_mov = {i: _array_digest(v) for i, v in mov.items()}
    d_fix = {j: _array_digest(v) for j, v in fix.items()}
    d_msk = {j: _array_digest(m) for j, m in msk.items()}

    results: dict[tuple[int, int], float] = {}
    todo: list[tuple[tuple[int, int], str]] = []
    for pair in dict.fromkeys(pairs):
        i, j = pair
        key = _pair_key(d_fix[j], d_mov[i], d_msk[j], sp, pre, int(seed))
        if cache is not None:
            value = _load_cached(*_cache_paths(cache, key), need_magnitude=save_magnitude)
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
        }

    def finish(pair: tuple[int, int], key: str, out: dict[str, Any]) -> None:
        results[pair] = float(out["mean_norm"])
        if cache is not None:
            _store(*_cache_paths(cache, key), key, pair, out, pre, sp, int(seed))

    bar = tqdm(total=len(todo), desc=f"ANTs ({pre.name})", disable=not progress)
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
    finally:
        bar.close()
    return {pair: results[pair] for pair in pairs}


def _as_completed(futures: dict[Future[Any], Any]) -> Iterator[Future[Any]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
    yield from done


# --------------------------------------------------------------------------------------
# pair bookkeeping
# --------------------------------------------------------------------------------------
def candidate_pairs(
    true_index: Sequence[int] | np.ndarray,
    n_originals: int,
    sample_size: int | None = None,
    seed: int = 0,
) -> list[tuple[int, int]]:
    """Pairs to register: all candidates (``sample_size=None``) or a random sample.

    Row ``i`` (reconstruction) always gets its true original ``true_index[i]``; in sample
    mode it also gets ``sample_size - 1`` other originals drawn without replacement
    (``numpy`` generator seeded with ``seed``). Returns ``(i, j)`` pairs sorted by ``i``.
    Ranks computed from a sample are ranks among the sampled candidates only.
    """
    t = np.asarray(true_index, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out: list[tuple[int, int]] = []
    for i, ti in enumerate(t):
        if not 0 <= ti < n_originals:
            raise ValueError(f"true_index[{i}] = {ti} out of range for {n_originals} originals")
        if sample_size is None or sample_size >= n_originals:
            js = list(range(n_originals))
        else:
            others = np.array([j for j in range(n_originals) if j != ti])
            k = max(int(sample_size) - 1, 0)
            js = sorted([int(ti), *rng.choice(others, size=k, replace=False).tolist()])
        out.extend((i, j) for j in js)
    return out


def pairs_to_matrix(values: dict[tuple[int, int], float], shape: tuple[int, int]) -> np.ndarray:
    """``{(i, j): value}`` -> ``(N, M)`` float64 matrix, ``NaN`` where no pair was computed."""
    out = np.full(shape, np.nan, dtype=np.float64)
    for (i, j), v in values.items():
        out[i, j] = v
    return out
