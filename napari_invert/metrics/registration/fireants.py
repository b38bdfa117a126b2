"""The FireANTs backend (``pip install 'napari-invert[gpu-registration]'``): affine then
greedy deformable registration with local cross-correlation, in PyTorch — on CUDA when
present (tens to hundreds of times faster than ANTs on a CPU), on the CPU otherwise.

The result has the ANTs backend's conventions (:mod:`~napari_invert.metrics.registration.common`):
``T(p) = A(p + u(p))``, ``u`` the non-linear displacement in mm along the array axes,
``mean_norm`` its mean norm. FireANTs adds its greedy field ``g`` after the affine, in
normalised ``[-1, 1]`` moving coordinates (``T(p) = A p + M g(p)``), so ``u = A^-1 M g``.
The affine stage starts from the centre-of-mass translation (as ``antsRegistration``).

Presets mirror the ANTs ones: mutual-information affine (same shrink factors), then
greedy CC (``fast`` stops the deformable stage at half resolution like ANTs' ``40x20x0``;
CC window radius 2 -> 5 voxels, radius 4 -> 9 voxels). Pyramid levels may shrink to 8 voxels
per edge (:func:`level_floor`; FireANTs' own floor of 32 ran every level of a 4 mm brain
near full resolution and ranked the true original first for 4 of 10 stand-ins against
ANTs' 8; with the floor, 10 of 10: BENCHMARKS.md). A CC affine was tried first and
rejected: on blurred reconstructions it settles on a 4-6 % enlargement (a blurred brain
looks bigger under local CC), which the greedy stage then has to undo, so the true
original no longer needs the smallest deformation (BENCHMARKS.md). FireANTs' MI is slow
on a CPU (minutes per pair at 4 mm on a busy 2-core machine); it is meant for CUDA.
Deterministic on the CPU (no random sampling; ``seed`` is recorded only).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_invert.errors import ConfigError
from napari_invert.metrics.registration.common import (
    DeformationResult,
    check_pair,
    lookup_preset,
    preset_fields,
    result_from_displacement,
)

__all__ = [
    "FIREANTS_PRESETS",
    "FireantsPreset",
    "level_floor",
    "register_pair_fireants",
    "resolve_fireants_preset",
]


@dataclass(frozen=True)
class FireantsPreset:
    """Affine then greedy schedules (scales = downsampling factors, coarse to fine)."""

    name: str
    aff_scales: tuple[int, ...]
    aff_iterations: tuple[int, ...]
    def_scales: tuple[int, ...]
    def_iterations: tuple[int, ...]
    aff_loss: str = "mi"
    aff_lr: float = 3e-3
    def_lr: float = 0.5
    cc_kernel_size: int = 5
    smooth_warp_sigma: float = 0.5
    smooth_grad_sigma: float = 1.0
    #: affine start: translation between the foreground centres of mass
    init: str = "com_foreground"
    #: smallest edge (voxels) of a pyramid level; FireANTs' own floor is 32, written for
    #: 1 mm brains, which on a 4 mm grid (40x48x40) turned every level into ~32^3
    min_level_voxels: int = 8

    def as_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict (used in cache keys)."""
        return {"fireants": True, **preset_fields(self)}


FIREANTS_PRESETS: dict[str, FireantsPreset] = {
    "fast": FireantsPreset(
        name="fast",
        aff_scales=(4, 2, 1),
        aff_iterations=(100, 50, 25),
        def_scales=(4, 2),
        def_iterations=(40, 20),
        cc_kernel_size=5,
    ),
    "paper": FireantsPreset(
        name="paper",
        aff_scales=(8, 4, 2, 1),
        aff_iterations=(500, 250, 100, 50),
        def_scales=(8, 4, 2, 1),
        def_iterations=(100, 70, 50, 20),
        cc_kernel_size=9,
        def_lr=0.25,
    ),
}


def resolve_fireants_preset(preset: str | FireantsPreset) -> FireantsPreset:
    """A FireANTs preset by name (``fast``, ``paper``) or the given one."""
    if isinstance(preset, FireantsPreset):
        return preset
    name = getattr(preset, "name", preset)  # an ANTs RegistrationPreset maps by its name
    return lookup_preset(FIREANTS_PRESETS, name, "FireANTs")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """FireANTs prints to stdout and logs at INFO: keep both out of the caller's output."""
    loggers = [logging.getLogger(n) for n in ("fireants",)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


#: FireANTs modules that size pyramid levels and warp fields with ``MIN_IMG_SIZE``.
_LEVEL_SIZING_MODULES = (
    "fireants.registration.affine",
    "fireants.registration.greedy",
    "fireants.registration.deformation.compositive",
)


@contextlib.contextmanager
def level_floor(voxels: int) -> Iterator[None]:
    """Let FireANTs shrink a pyramid level down to ``voxels`` per edge (restored on exit).

    FireANTs sizes a level at scale ``s`` as ``max(int(n / s), MIN_IMG_SIZE)`` with
    ``MIN_IMG_SIZE = 32``, a module constant each registration module imports by name. On a
    40x48x40 grid that floor made the ``fast`` preset's levels at 1/4 and 1/2 resolution
    both ~32^3 (and anisotropic: 48 -> 32, 40 -> 32), so the deformable field was optimised
    near full resolution, not at half resolution like ANTs'. Not thread-safe: registrations
    run one per worker process.
    """
    import importlib

    modules = [importlib.import_module(name) for name in _LEVEL_SIZING_MODULES]
    saved = [m.MIN_IMG_SIZE for m in modules]
    for m in modules:
        m.MIN_IMG_SIZE = int(voxels)
    try:
        yield
    finally:
        for m, value in zip(modules, saved):
            m.MIN_IMG_SIZE = value


def import_fireants() -> None:
    """Import FireANTs quietly, or raise a ConfigError saying how to install it."""
    try:
        with _quiet():
            import fireants.io.image
            import fireants.registration.affine
            import fireants.registration.greedy  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "evaluation.deformation.backend 'fireants' needs FireANTs: "
            f"pip install 'napari-invert[gpu-registration]' ({exc})"
        ) from None
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("fireants"):
            logging.getLogger(name).setLevel(logging.ERROR)


def fireants_device(device: str | None = None) -> str:
    """``cuda`` when available (or asked for), else ``cpu``."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("FireANTs registration on 'cuda' was requested but no CUDA device is available")
    return str(device)


def _image(volume: np.ndarray, spacing: tuple[float, float, float], device: str) -> Any:
    """A FireANTs image whose ITK index (i, j, k) is array index (X, Y, Z), origin 0."""
    import SimpleITK as sitk
    from fireants.io.image import Image

    itk = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))))
    itk.SetSpacing(tuple(float(s) for s in spacing))
    itk.SetOrigin((0.0, 0.0, 0.0))
    return Image(itk, device=device)


def _centre_of_mass(volume: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Intensity-weighted centre (mm, array axes) of the bright part of ``volume`` (voxels
    above a quarter of its 99.5th percentile).

    The affine stage starts from the translation between the two centres, as ANTs'
    ``antsRegistration`` does by default: FireANTs' Adam steps on the translation (mm)
    are too small to find a shift of several voxels on a coarse grid by themselves.
    """
    v = volume.astype(np.float64)
    # Foreground only: noise on a zero background would pull the centre to the grid's centre.
    w = np.where(v > 0.25 * np.percentile(v, 99.5), v, 0.0)
    total = w.sum()
    if total <= 0:
        return (np.asarray(volume.shape, dtype=np.float64) - 1) / 2 * np.asarray(spacing)
    idx = np.indices(volume.shape, dtype=np.float64)
    return np.array([(idx[k] * w).sum() / total * spacing[k] for k in range(3)])


def register_pair_fireants(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    preset: str | FireantsPreset = "fast",
    mask: np.ndarray | None = None,
    seed: int = 0,
    keep_displacement: bool = True,
    device: str | None = None,
) -> DeformationResult:
    """FireANTs registration of ``moving`` to ``fixed`` (see
    :func:`napari_invert.metrics.register_pair` for the parameters); ``device``: ``cuda``
    / ``cpu`` / ``None`` (CUDA when present)."""
    import torch

    fixed, moving, mask, sp = check_pair(fixed, moving, mask, spacing, seed)
    pre = resolve_fireants_preset(preset)
    import_fireants()
    from fireants.io.image import BatchedImages
    from fireants.registration.affine import AffineRegistration
    from fireants.registration.greedy import GreedyRegistration

    dev = fireants_device(device)
    t0 = time.perf_counter()
    with _quiet(), level_floor(pre.min_level_voxels):
        fb = BatchedImages([_image(fixed, sp, dev)])
        mb = BatchedImages([_image(moving, sp, dev)])
        init = torch.eye(3, 4, dtype=torch.float32)[None]
        init[0, :, 3] = torch.from_numpy(_centre_of_mass(moving, sp) - _centre_of_mass(fixed, sp))
        aff = AffineRegistration(
            list(pre.aff_scales),
            list(pre.aff_iterations),
            fb,
            mb,
            loss_type=pre.aff_loss,
            cc_kernel_size=pre.cc_kernel_size,
            optimizer="Adam",
            optimizer_lr=pre.aff_lr,
            progress_bar=False,
            init_rigid=init.to(dev),
        )
        aff.optimize()
        affine_t = aff.get_affine_matrix().detach()
        reg = GreedyRegistration(
            list(pre.def_scales),
            list(pre.def_iterations),
            fb,
            mb,
            loss_type="cc",
            cc_kernel_size=pre.cc_kernel_size,
            init_affine=affine_t,
            optimizer="Adam",
            optimizer_lr=pre.def_lr,
            smooth_warp_sigma=pre.smooth_warp_sigma,
            smooth_grad_sigma=pre.smooth_grad_sigma,
            progress_bar=False,
        )
        reg.optimize()
        with torch.no_grad():
            grid = reg.get_warp_parameters(fb, mb)["grid"][0]  # (Z, Y, X, 3), normalised, (x, y, z)
            # FireANTs samples the moving image at A p + M g(p) (g added after the affine, in
            # normalised moving coordinates, M their linear map to mm); ANTs' convention is
            # A (p + u(p)), so u = A_lin^-1 M g.
            t2p = mb.get_torch2phy()[0, :3, :3].to(grid.dtype)
            to_u = torch.linalg.inv(affine_t[0, :3, :3].to(grid.dtype)) @ t2p
            u_mm = torch.einsum("ij,...j->...i", to_u, grid)
    u = u_mm.detach().cpu().numpy().transpose(2, 1, 0, 3).astype(np.float32)  # (X, Y, Z, 3)
    affine = affine_t[0].cpu().numpy().astype(np.float64)
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
        backend="fireants",
        keep_displacement=keep_displacement,
    )
