"""Study units: one (variant, fold, architecture) victim and all its attacks per unit.

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

__all__ = ["run_study_units", "study_units", "victim_unit"]

VICTIM_FUNC = "napari_invert.execution.study:victim_unit"


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
    chosen_folds = sorted(set(folds)) if folds is not None else list(range(config.folds))
    chosen_variants = list(variants) if variants is not None else list(config.preprocess.variants)
    chosen_archs = list(architectures) if architectures is not None else list(config.segmenter.architectures)
    units = []
    for fold in chosen_folds:
        for variant in chosen_variants:
            for arch in chosen_archs:
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
    try:
        executor.map(units, progress=progress, desc=f"victims ({executor.name})")
    finally:
        folder = finishing_pass()
        with _manifest_lock(folder):
            manifest = folder.read_manifest()
            manifest["last_run_seconds"] = round(time.perf_counter() - t0, 1)
            manifest["last_run_backend"] = executor.name
            folder.write_manifest(manifest)
    return folder
