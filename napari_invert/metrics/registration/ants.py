"""The ANTs backend: affine (mutual information) then SyN (cross-correlation), antspyx.

Presets (``fast`` / ``paper``), both MI affine then SyN with CC:

* ``fast``: affine 100x50x25 iterations at shrink 4,2,1 (smoothing 2,1,0 vox); SyN[0.2,
  3, 0] CC radius 2, 40x20x0 iterations at shrink 4,2,1 — antspyx's default SyN schedule:
  the finest optimised level is half resolution, the field is upsampled to the full grid.
  Seconds per pair at 3 mm.
* ``paper``: the standard ``antsRegistrationSyN.sh`` schedule — affine
  1000x500x250x100 at shrink 8,4,2,1 (smoothing 3,2,1,0 vox); SyN[0.1, 3, 0] CC radius 4,
  100x70x50x20 at shrink 8,4,2,1. Minutes per pair at 1 mm.

``mean_norm`` is the mean norm of the SyN ``*1Warp.nii.gz`` field only (the affine stage
is returned separately). Arrays are given to ANTs with origin 0, identity direction and
the voxel spacing, so displacement component ``k`` is along array axis ``k``, in mm.

Determinism: ANTs draws random MI samples; a fixed seed (ANTs treats 0 as "seed from the
clock", so ANTs gets ``seed + 1``) makes a run reproducible **only single-threaded**. ITK
reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, at its first filter in a process:
:func:`~napari_invert.metrics.registration.matrix.deformation_matrix` therefore runs
registrations in spawned worker processes with that variable set to 1, and blocks of pairs
on an executor pin it or move to a fresh process
(:mod:`~napari_invert.metrics.registration.threads`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_invert.metrics.registration.common import (
    DeformationResult,
    check_pair,
    lookup_preset,
    preset_fields,
    result_from_displacement,
)

__all__ = ["PRESETS", "RegistrationPreset", "register_pair_ants", "resolve_preset"]


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
        return preset_fields(self)


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


def resolve_preset(preset: str | RegistrationPreset) -> RegistrationPreset:
    """A preset by name (``fast``, ``paper``) or the given :class:`RegistrationPreset`."""
    if isinstance(preset, RegistrationPreset):
        return preset
    return lookup_preset(PRESETS, preset, "registration")


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
def register_pair_ants(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preset: str | RegistrationPreset = "fast",
    mask: np.ndarray | None = None,
    seed: int = 0,
    keep_displacement: bool = True,
) -> DeformationResult:
    """ANTs registration of ``moving`` to ``fixed`` (see
    :func:`napari_invert.metrics.register_pair` for the parameters).

    ANTs writes its transforms under an ``outprefix`` inside a private
    ``tempfile.TemporaryDirectory``, which is removed before returning, also on error.
    """
    import ants

    fixed, moving, mask, sp = check_pair(fixed, moving, mask, spacing, seed)
    pre = resolve_preset(preset)
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
    return result_from_displacement(
        u,
        affine,
        mask,
        sp,
        fixed_shape=fixed.shape,
        preset=pre.name,
        seed=seed,
        seconds=seconds,
        backend="ants",
        keep_displacement=keep_displacement,
    )
