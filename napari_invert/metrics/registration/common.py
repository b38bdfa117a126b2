"""What every registration backend shares: the result type, input checks, the metric
computed from a displacement field, the content-keyed cache and pair bookkeeping.

Conventions (all backends): arrays are ``(X, Y, Z)`` in voxel order, physical point of
voxel ``p`` is ``p * spacing`` (origin 0, identity direction), displacement component
``k`` is along array axis ``k``, in mm. The fixed-to-moving point map is
``T(p) = A(p + u(p))`` with ``u`` the non-linear displacement on the fixed grid and ``A``
the affine stage; ``mean_norm`` is the mean ``|u|`` (non-linear part only) and
``total_mean_norm`` the mean ``|T(p) - p|`` (the whole transform). :data:`MEASURES` names
them for :func:`~napari_invert.metrics.deformation_matrix`'s ``measure``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from napari_invert._io import atomic_path, read_json, write_json_atomic
from napari_invert.errors import DataError

__all__ = [
    "BACKENDS",
    "CACHE_VERSION",
    "MEASURES",
    "DeformationResult",
    "candidate_pairs",
    "check_backend",
    "check_measure",
    "pairs_to_matrix",
    "result_from_displacement",
]

#: Bumped whenever the computation changes, so stale cache entries are not reused.
CACHE_VERSION = 1

#: Registration backends of the deformation metric.
BACKENDS = ("ants", "fireants")

_Preset = TypeVar("_Preset")


@dataclass
class DeformationResult:
    """Outcome of one registration (reconstruction -> original).

    Attributes
    ----------
    displacement
        ``(X, Y, Z, 3)`` float32, mm: the non-linear displacement ``u(p)`` at every voxel
        ``p`` of the fixed grid, components along the array axes. May be ``None`` when not
        kept (:func:`deformation_matrix` workers).
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
    backend
        ``"ants"`` or ``"fireants"``.
    """

    displacement: np.ndarray | None
    magnitude: np.ndarray | None
    mean_norm: float
    affine: np.ndarray
    total_mean_norm: float
    preset: str
    seed: int
    seconds: float
    backend: str = "ants"

    @property
    def affine_translation(self) -> np.ndarray:
        """``(3,)`` mm: the translation ``t`` of the affine stage ``T(p) = A p + t``.

        Physical points are ``voxel index * spacing`` (origin 0), so for a pure shift this
        is the shift itself: if the moving image is the fixed one moved by ``+d`` mm, the
        content at fixed point ``p`` is at ``p + d`` in the moving image and ``t = d``.
        """
        return self.affine[:3, 3].copy()


def check_backend(backend: str) -> str:
    """``backend`` if known, else ValueError naming the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown registration backend '{backend}' (choose from {list(BACKENDS)})")
    return backend


def lookup_preset(presets: Mapping[str, _Preset], name: str, what: str) -> _Preset:
    """``presets[name]``, else ValueError naming the choices (``what``: e.g. ``"FireANTs"``)."""
    try:
        return presets[name]
    except KeyError:
        raise ValueError(f"unknown {what} preset '{name}' (choose from {sorted(presets)})") from None


def preset_fields(preset: Any) -> dict[str, Any]:
    """A preset dataclass's fields as a JSON-ready dict, tuples as lists (for cache keys)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(preset).items()}


def check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing}")
    return sp  # type: ignore[return-value]


def check_volume(v: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim != 3:
        raise ValueError(f"{name}: expected a 3D volume (X, Y, Z), got shape {v.shape}")
    v = np.ascontiguousarray(v, dtype=np.float32)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: contains NaN or Inf")
    return v


def check_pair(
    fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray | None, spacing: Sequence[float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """Validated ``(fixed, moving, mask, spacing)`` of one registration."""
    fixed = check_volume(fixed, "fixed")
    moving = check_volume(moving, "moving")
    if fixed.shape != moving.shape:
        raise ValueError(f"fixed {fixed.shape} and moving {moving.shape} must have one shape")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != fixed.shape:
            raise ValueError(f"mask shape {mask.shape} differs from fixed {fixed.shape}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return fixed, moving, mask, check_spacing(spacing)


def result_from_displacement(
    u: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None,
    spacing: tuple[float, float, float],
    *,
    fixed_shape: tuple[int, ...],
    preset: str,
    seed: int,
    seconds: float,
    backend: str,
    keep_displacement: bool,
) -> DeformationResult:
    """The metric from a displacement field ``u`` ``(X, Y, Z, 3)`` mm and affine ``A`` (4x4).

    ``fixed_shape``: ``(X, Y, Z)`` of the fixed image; a ``u`` of another shape (a backend
    returning something unexpected) is a RuntimeError.
    """
    if u.shape != (*fixed_shape, 3):
        raise RuntimeError(f"{backend} displacement field has shape {u.shape}, expected {(*fixed_shape, 3)}")
    shape = u.shape[:3]
    magnitude = np.sqrt(np.sum(u.astype(np.float64) ** 2, axis=-1)).astype(np.float32)
    sel = mask if mask is not None else np.ones(shape, dtype=bool)
    mean_norm = float(magnitude[sel].mean(dtype=np.float64)) if sel.any() else float("nan")
    # full transform A(p + u(p)) - p on the selected voxels
    pts = np.argwhere(sel).astype(np.float64) * np.asarray(spacing)
    q = pts + u[sel].astype(np.float64)
    total = q @ affine[:3, :3].T + affine[:3, 3] - pts
    total_mean_norm = float(np.linalg.norm(total, axis=1).mean()) if len(pts) else float("nan")
    return DeformationResult(
        displacement=u if keep_displacement else None,
        magnitude=magnitude if keep_displacement else None,
        mean_norm=mean_norm,
        affine=affine,
        total_mean_norm=total_mean_norm,
        preset=preset,
        seed=int(seed),
        seconds=seconds,
        backend=backend,
    )


# --------------------------------------------------------------------------------------
# content-keyed cache
# --------------------------------------------------------------------------------------
def array_digest(v: np.ndarray | None) -> str:
    if v is None:
        return "none"
    v = np.ascontiguousarray(v)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(v.dtype).encode())
    h.update(str(v.shape).encode())
    h.update(memoryview(v).cast("B"))
    return h.hexdigest()


def pair_key(
    fixed_digest: str,
    moving_digest: str,
    mask_digest: str,
    spacing: tuple[float, float, float],
    preset: dict[str, Any],
    seed: int,
    backend: str = "ants",
) -> str:
    """Cache key of one registration; ANTs keys are those of earlier versions (no backend)."""
    doc: dict[str, Any] = {
        "version": CACHE_VERSION,
        "fixed": fixed_digest,
        "moving": moving_digest,
        "mask": mask_digest,
        "spacing": list(spacing),
        "preset": preset,
        "seed": seed,
    }
    if backend != "ants":
        doc["backend"] = backend
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.json", cache_dir / f"{key}_magnitude.npy"


#: what a pair's deformation number measures -> the result field that holds it (mm):
#: ``nonlinear``, the mean norm of the non-linear field after the affine stage (the paper's
#: metric); ``total``, the mean displacement of the whole transform (affine + non-linear)
MEASURES: dict[str, str] = {"nonlinear": "mean_norm", "total": "total_mean_norm"}


def check_measure(measure: str) -> str:
    """``measure`` if it is a key of :data:`MEASURES`, else ValueError naming the choices."""
    if measure not in MEASURES:
        raise ValueError(f"deformation measure {measure!r}: choose one of {', '.join(MEASURES)}")
    return measure


def load_cached(
    json_path: Path, npy_path: Path, need_magnitude: bool, measure: str = "nonlinear"
) -> float | None:
    """A cached pair's ``measure`` (mm; NaN when undefined), or None when it must be computed."""
    if not json_path.exists() or (need_magnitude and not npy_path.exists()):
        return None
    try:
        rec = read_json(json_path)
        value = rec[MEASURES[measure]]
        return float("nan") if value is None else float(value)
    except (DataError, KeyError, TypeError, ValueError):
        return None  # unreadable entry: recompute and overwrite


def store(
    json_path: Path,
    npy_path: Path,
    key: str,
    pair: tuple[int, int],
    out: dict[str, Any],
    preset: dict[str, Any],
    spacing: tuple[float, float, float],
    seed: int,
    backend: str = "ants",
) -> None:
    """Write one pair's result (and its magnitude map when present) atomically."""
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
        "preset": preset,
        "seed": seed,
        "backend": backend,
        "cache_version": CACHE_VERSION,
    }
    write_json_atomic(json_path, rec)


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
