"""Study units: one (variant, fold, architecture) victim and all its attacks per unit, and
one unit per membership shadow segmenter (run first; the victim's membership step loads them).

:func:`victim_unit` trains the victim segmenter of one variant, fold and architecture on
the fold's private subjects, then every tap option's inversion decoder on the fold's
attack subjects, and writes the reconstructions — exactly the steps
:class:`~napari_invert.study.runner.StudyRunner` runs for that triple, through its public
``run()`` restricted to it, so results and manifest keys are the same as a sequential
run's. Units share the study folder; the manifest is merged under its file lock.

:func:`run_study_units` is the driver: data preparation once (so units only read its
cache), the units on an executor, then a cheap finishing pass that rewrites
``cohort.json`` for the whole study and records the wall time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from napari_invert.config import StudyConfig
from napari_invert.execution.base import Executor, Unit
from napari_invert.study.layout import StudyFolder
from napari_invert.study.selection import select_victims

__all__ = ["run_study_units", "shadow_unit", "shadow_units", "study_units", "victim_unit"]

VICTIM_FUNC = "napari_invert.execution.study:victim_unit"
SHADOW_FUNC = "napari_invert.execution.study:shadow_unit"


def victim_unit(config: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """Run (or resume) one victim and its attacks.

    ``config``: ``{"study": StudyConfig as JSON, "variant", "fold", "arch", "device"}``;
    ``paths``: ``{"out": study folder}``. Returns ``{"key", "seconds", "steps"}`` (the
    manifest keys of this victim's finished steps).
    """
    import torch

    from napari_invert.study.runner import StudyRunner

    study = StudyConfig.model_validate(config["study"])
    t0 = time.perf_counter()
    # The victim's initial weights come from torch's global RNG: seed it per victim, so a
    # unit's result does not depend on what its worker process ran before (scheduling).
    torch.manual_seed(study.segmenter_training.seed + 1000 * int(config["fold"]))
    folder = StudyRunner(
        study,
        paths["out"],
        device=config.get("device"),
        folds=[int(config["fold"])],
        variants=[config["variant"]],
        architectures=[config["arch"]],
        progress=False,
    ).run()
    tag = f":{config['variant']}:fold{config['fold']}:{config['arch']}"
    steps = sorted(k for k in folder.read_manifest().get("steps", {}) if tag in k)
    return {
        "key": victim_key(config["variant"], int(config["fold"]), config["arch"]),
        "seconds": round(time.perf_counter() - t0, 1),
        "steps": steps,
    }


def victim_key(variant: str, fold: int, arch: str) -> str:
    """Unit key of one victim: ``victim:<variant>:fold<k>:<arch>``."""
    return f"victim:{variant}:fold{fold}:{arch}"


def study_units(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    device: str | None = None,
    folds: Iterable[int] | None = None,
    variants: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
) -> list[Unit]:
    """Every (variant, fold, architecture) victim unit of ``config`` (a subset if given).

    Resources per unit come from ``config.execution`` (``cpus_per_task``,
    ``gpus_per_task``). Units are ordered fold-major so early folds finish first.
    """
    ex = config.execution
    payload = config.model_dump(mode="json")
    chosen = select_victims(config, folds, variants, architectures)
    units = []
    for fold in chosen.folds:
        for variant in chosen.variants:
            for arch in chosen.architectures:
                units.append(
                    Unit(
                        key=victim_key(variant, fold, arch),
                        func=VICTIM_FUNC,
                        config={
                            "study": payload,
                            "variant": variant,
                            "fold": fold,
                            "arch": arch,
                            "device": device,
                        },
                        paths={"out": str(Path(out_dir).resolve())},
                        cpus=ex.cpus_per_task,
                        gpus=ex.gpus_per_task,
                    )
                )
    return units


def shadow_key(variant: str, fold: int, arch: str, k: int) -> str:
    """Unit key of one membership shadow: ``shadow:<variant>:fold<k>:<arch>:<index>``."""
    return f"shadow:{variant}:fold{fold}:{arch}:{k}"


def shadow_unit(config: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """Train (or resume) membership shadow ``k`` of one victim, as the study would.

    The same shadow :func:`~napari_invert.membership.run_membership_inference` trains inside
    the victim's step (same subjects, seeds, training settings and files, checked when the
    victim's membership step loads it), so the victim unit then only loads it.
    ``config``: ``{"study", "variant", "fold", "arch", "k", "device"}``; ``paths``:
    ``{"out": study folder}``. Returns ``{"key", "seconds", "trained"}``.
    """
    import numpy as np

    from napari_invert.checkpoint import checkpoint_paths
    from napari_invert.device import resolve_device
    from napari_invert.membership.shadows import shadow_assignment, shadow_seeds, train_shadow
    from napari_invert.study.runner import StudyRunner

    study = StudyConfig.model_validate(config["study"])
    variant, fold_k, arch, k = config["variant"], int(config["fold"]), config["arch"], int(config["k"])
    key = shadow_key(variant, fold_k, arch, k)
    t0 = time.perf_counter()
    runner = StudyRunner(
        study,
        paths["out"],
        device=config.get("device"),
        folds=[fold_k],
        variants=[variant],
        architectures=[arch],
        progress=False,
    )
    stem = runner.folder.shadow_stem(variant, fold_k, arch, k)
    if checkpoint_paths(stem)[1].is_file():
        return {"key": key, "seconds": 0.0, "trained": False}
    # What the runner's membership step gives train_shadows (runner internals, read-only:
    # the prepared cohort comes from the cache the driver's data step filled).
    runner._manifest = runner.folder.read_manifest()
    cohort = runner._load_cohort()
    fold = runner._splits([s.subject_id for s in cohort.subjects])[fold_k]
    prepared = runner._prepare(cohort, variant)
    by_id = {s.subject_id: s for s in prepared.subjects}
    attack = [by_id[s] for s in fold.attack]
    if any(s.labels is None for s in attack):
        return {"key": key, "seconds": 0.0, "trained": False}  # the victim unit records the skip
    seed = study.membership.seed + 1000 * fold_k
    assign = shadow_assignment(len(attack), study.membership.n_shadows, seed)[k]
    init_seed, train_seed = shadow_seeds(seed, k)
    train_shadow(
        k,
        runner._initial_segmenter(arch, fold, prepared).spec(),
        [attack[j] for j in np.flatnonzero(assign)],
        [attack[j].subject_id for j in np.flatnonzero(assign)],
        runner._victim_train_config(fold).model_copy(update={"seed": train_seed}),
        init_seed,
        stem,
        runner.folder.shadow_curve(variant, fold_k, arch, k),
        device=resolve_device(runner.device_name),
    )
    return {"key": key, "seconds": round(time.perf_counter() - t0, 1), "trained": True}


def shadow_units(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    device: str | None = None,
    folds: Iterable[int] | None = None,
    variants: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
) -> list[Unit]:
    """One unit per membership shadow of every victim whose membership step is still to run.

    Needs the study's ``splits.json`` (written by the data step): shadows are trained only
    for folds with held-out non-members, as the runner's membership step. Same resources as
    the victims.
    """
    mem = config.membership
    if not (mem.enabled and mem.n_shadows > 0):
        return []
    folder = StudyFolder(Path(out_dir))
    splits = {int(f["fold"]): f for f in folder.read_splits()["folds"]}
    done = folder.read_manifest().get("steps", {})
    ex = config.execution
    units = []
    for victim in study_units(
        config, out_dir, device=device, folds=folds, variants=variants, architectures=architectures
    ):
        variant, fold, arch = (victim.config[k] for k in ("variant", "fold", "arch"))
        if not splits[fold].get("holdout") or f"membership:{variant}:fold{fold}:{arch}" in done:
            continue
        for k in range(mem.n_shadows):
            units.append(
                Unit(
                    key=shadow_key(variant, fold, arch, k),
                    func=SHADOW_FUNC,
                    config={**victim.config, "k": k},
                    paths=dict(victim.paths),
                    cpus=ex.cpus_per_task,
                    gpus=ex.gpus_per_task,
                )
            )
    return units


def run_study_units(
    config: StudyConfig,
    out_dir: str | Path,
    executor: Executor,
    *,
    device: str | None = None,
    folds: Iterable[int] | None = None,
    variants: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
    progress: bool = True,
) -> StudyFolder:
    """Prepare once, run every victim unit on ``executor``, then finish the study folder.

    Every unit is sent, also on a resume: a unit whose steps the manifest records as
    finished only reloads the prepared cohort and returns (the runner decides what is
    done, so controls or steps added to the runner later are never skipped by mistake).
    The finishing pass runs even when a unit fails (it restores ``cohort.json``, which a
    unit restricted to one variant rewrites for that variant only) and records
    ``last_run_seconds``: the driver's wall time of the whole call.
    """
    from napari_invert.study.runner import StudyRunner, _manifest_lock

    t0 = time.perf_counter()
    variants = list(variants) if variants is not None else None
    architectures = list(architectures) if architectures is not None else None

    def finishing_pass() -> StudyFolder:
        return StudyRunner(
            config,
            out_dir,
            device=device,
            folds=[],
            variants=variants,
            architectures=architectures,
            progress=False,
        ).run()

    # Config/splits checks and data preparation, once, before any unit starts.
    StudyRunner(
        config,
        out_dir,
        device=device,
        folds=[],
        variants=variants,
        architectures=architectures,
        progress=progress,
    ).run()
    units = study_units(
        config, out_dir, device=device, folds=folds, variants=variants, architectures=architectures
    )
    shadows = shadow_units(
        config, out_dir, device=device, folds=folds, variants=variants, architectures=architectures
    )
    try:
        if shadows:  # first: each victim's membership step then loads its shadows
            executor.map(shadows, progress=progress, desc=f"membership shadows ({executor.name})")
        executor.map(units, progress=progress, desc=f"victims ({executor.name})")
    finally:
        folder = finishing_pass()
        with _manifest_lock(folder):
            manifest = folder.read_manifest()
            manifest["last_run_seconds"] = round(time.perf_counter() - t0, 1)
            manifest["last_run_backend"] = executor.name
            folder.write_manifest(manifest)
    return folder
