"""Defended experiments: train each defended victim, attack it, measure the point.

For every variant, fold, architecture and defence x strength of ``config.defences`` (plus
the undefended reference ``none``, trained and attacked by the same code), the runner

1. trains the defended victim on the fold's *private* subjects (members) only
   (:func:`napari_invert.defences.training.train_defended_victim`; resumable),
2. trains the attacker's inversion decoder FROM SCRATCH against the defended victim, on
   the attacker's own subjects only, reading every tensor the victim exposes (perturbed
   when the defence perturbs them): no defence is credited for an attacker that did not
   adapt,
3. reconstructs the members (and held-out non-members when the splits have them),
4. measures utility, feature inversion and training-data leakage
   (:mod:`napari_invert.defences.measures`) into ``result.json``.

Paths come from :class:`~napari_invert.study.layout.StudyFolder`
(``defences/<variant>/fold<k>/<arch>@<defence>/``). A finished experiment (its
``result.json`` exists) is skipped; an interrupted training resumes from its checkpoint.
Seeds match the main runner's, so the reference ``none`` is the study's own victim and
attacker retrained identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from napari_invert._io import write_json_atomic
from napari_invert._threads import restores_threads
from napari_invert.config import StudyConfig
from napari_invert.defences.result import RESULT_FORMAT_VERSION, read_result
from napari_invert.defences.spec import REFERENCE, DefenceSpec, expand_defences
from napari_invert.errors import DataError
from napari_invert.study.layout import StudyFolder
from napari_invert.study.selection import select_victims

log = logging.getLogger(__name__)


class _VariantData:
    """Originals, masks and labels of every subject of one variant (model grid)."""

    def __init__(self, folder: StudyFolder, variant: str) -> None:
        from napari_invert.study.results import StudyResults

        results = StudyResults(folder.root)
        self.ids = results.subject_ids
        self.images = {s: results.original(variant, s) for s in self.ids}
        self.masks = {s: results.mask(variant, s) for s in self.ids}
        self.labels = {s: results.labels(variant, s) for s in self.ids}
        self.affine = results.affine
        stack = np.stack([self.images[s] for s in self.ids])
        rng = float(stack.max() - stack.min())
        self.data_range = rng if np.isfinite(rng) and rng > 0 else 1.0
        self.n_classes = int(results.cohort.get("n_classes") or 0)


def defence_specs(config: StudyConfig) -> list[DefenceSpec]:
    """The reference (``none``) followed by every defence x strength of the config."""
    return [REFERENCE, *expand_defences(config.defences)]


@restores_threads
def run_defended_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    device: str | None = None,
    folds: Iterable[int] | None = None,
    variants: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
    defences: Iterable[str] | None = None,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> list[Path]:
    """Run (or resume) every defended experiment of ``config`` in the study folder ``out_dir``.

    Data preparation, splits and the configuration check are the study runner's own
    (:class:`~napari_invert.study.runner.StudyRunner` with no folds). ``defences`` restricts
    the run to these slugs (``none``, ``noise-0.5``, ...). Returns the ``result.json`` paths.
    """
    from napari_invert.device import resolve_device, set_threads
    from napari_invert.study.runner import StudyRunner

    StudyRunner(config, out_dir, device=device, folds=[], progress=progress).run()
    if config.num_threads:
        set_threads(config.num_threads)
    folder = StudyFolder(Path(out_dir))
    dev = resolve_device(device or config.device)
    specs = defence_specs(config)
    if defences is not None:
        wanted = set(defences)
        specs = [s for s in specs if s.slug in wanted]
    # an empty variant or architecture list means all of them here (as in the study runner)
    chosen = select_victims(config, folds, variants or None, architectures or None)
    out: list[Path] = []
    for variant in chosen.variants:
        data = _VariantData(folder, variant)
        for fold in folder.read_splits()["folds"]:
            if int(fold["fold"]) not in chosen.folds:
                continue
            for arch in chosen.architectures:
                for spec in specs:
                    if not spec.applies_to(arch):
                        continue
                    out.append(
                        run_defended_experiment(
                            config, folder, data, variant, fold, arch, spec, dev, progress, should_stop
                        )
                    )
    return out


def defended_fold_unit(config: dict[str, Any], paths: dict[str, str]) -> int:
    """Executor unit: the defended victims of one fold (``config["folds"]``) into the study
    folder ``paths["out"]``; returns how many defended results that fold has."""
    study = StudyConfig.model_validate(config["study"])
    kw = dict(config.get("kw") or {})
    return len(
        run_defended_study(study, paths["out"], device=config.get("device"), folds=config["folds"], **kw)
    )


def run_defended_parallel(
    config: StudyConfig,
    out_dir: str | Path,
    jobs: int,
    *,
    device: str | None = None,
    folds: Iterable[int] | None = None,
    backend: str | None = None,
    address: str | None = None,
    **kw: Any,
) -> list[Path]:
    """:func:`run_defended_study` with one unit per fold on an executor (``backend``:
    default ``config.execution``; ``local`` runs ``jobs`` processes with one torch thread
    each), as :func:`~napari_invert.study.runner.run_study_parallel` does: Ctrl-C drops the
    queued folds and stops the running ones, and rerunning resumes."""
    from napari_invert.execution import Unit, make_executor
    from napari_invert.study.runner import StudyRunner

    StudyRunner(config, out_dir, device=device, folds=[], progress=kw.get("progress", True)).run()
    chosen = select_victims(config, folds).folds
    payload = config.model_dump(mode="json")
    out = str(Path(out_dir).resolve())  # absolute: workers may have another cwd
    ex = config.execution
    units = [
        Unit(
            f"defended:fold{k}",
            "napari_invert.study.defended:defended_fold_unit",
            {"study": payload, "device": device, "folds": [int(k)], "kw": {**kw, "progress": False}},
            {"out": out},
            cpus=ex.cpus_per_task,
            gpus=ex.gpus_per_task,
        )
        for k in chosen
    ]
    executor = make_executor(backend or ex.backend, jobs=jobs, address=address or ex.address)
    executor.map(units, progress=kw.get("progress", True), desc="defended folds")
    return StudyFolder(Path(out_dir)).defended_results()


def _prior(folder: StudyFolder, data: _VariantData, variant: str, fold: dict[str, Any]) -> np.ndarray:
    """The attacker's prior (mean of its own images), written where the study runner writes it."""
    from napari_invert.data.nifti import save_nifti
    from napari_invert.study.results import _read_array

    path = folder.prior(variant, int(fold["fold"]))
    if not path.is_file():
        prior = np.mean([data.images[s] for s in fold["attack"]], axis=0).astype(np.float32)
        save_nifti(path, prior, data.affine)
    return _read_array(path, np.float32)


def reuses_reference(spec: DefenceSpec) -> bool:
    """Inference-only noise / quantisation: the victim's weights are the reference's."""
    return spec.kind in ("noise", "quantise") and not bool(spec.params.get("train", True))


def _defended_victim(
    config: StudyConfig,
    folder: StudyFolder,
    data: _VariantData,
    variant: str,
    k: int,
    members: list[str],
    arch: str,
    spec: DefenceSpec,
    device: Any,
    progress: bool,
    should_stop: Callable[[], bool] | None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Load or train the victim of ``spec`` -> ``(trained network, deployed network, info)``.

    An inference-only perturbation reuses the reference's trained weights (trained here if
    they are missing) and only wraps them, so it costs no extra victim training.
    """
    import torch

    from napari_invert.defences.perturb import DefendedSegmenter
    from napari_invert.defences.training import perturbation_for, train_defended_victim
    from napari_invert.models import load_segmenter, save_segmenter

    perturbation_seed = config.attack.train.seed + 1000 * k + 17
    if reuses_reference(spec):
        model, _, _ = _defended_victim(
            config, folder, data, variant, k, members, arch, REFERENCE, device, progress, should_stop
        )
        perturbation = perturbation_for(spec, perturbation_seed)
        return model, DefendedSegmenter(model, perturbation).eval(), {"weights": "reference (none)"}
    stem = folder.defended_segmenter_stem(variant, k, arch, spec.slug)
    if stem.with_suffix(".json").is_file():
        model, meta = load_segmenter(stem, device)
        perturbation = perturbation_for(spec, perturbation_seed)
        deployed = model if perturbation is None else DefendedSegmenter(model, perturbation).eval()
        return model, deployed, dict(meta.get("defence_info") or {})
    torch.manual_seed(config.segmenter_training.seed + 1000 * k)
    train_cfg = config.segmenter_training.model_copy(
        update={"seed": config.segmenter_training.seed + 1000 * k}
    )
    model, deployed, info = train_defended_victim(
        arch,
        config.segmenter,
        data.n_classes,
        spec,
        [data.images[s] for s in members],
        [data.labels[s] for s in members],
        train_cfg,
        device,
        checkpoint_stem=stem.with_name("segmenter_resume"),
        curve_path=folder.defended_segmenter_curve(variant, k, arch, spec.slug),
        progress=progress,
        should_stop=should_stop,
        perturbation_seed=perturbation_seed,
    )
    save_segmenter(
        stem,
        model,
        {
            "variant": variant,
            "fold": k,
            "trained_on": members,
            "defence": spec.to_dict(),
            "defence_info": info,
        },
    )
    return model, deployed, info


def run_defended_experiment(
    config: StudyConfig,
    folder: StudyFolder,
    data: _VariantData,
    variant: str,
    fold: dict[str, Any],
    arch: str,
    spec: DefenceSpec,
    device: Any,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """One defended victim in one fold: train, attack, reconstruct, measure -> ``result.json``."""
    import torch

    from napari_invert.attack import InversionDecoder, load_decoder, reconstruct, save_decoder
    from napari_invert.attack.training import train_inversion_decoder
    from napari_invert.data.nifti import save_nifti
    from napari_invert.defences.measures import (
        auc_mann_whitney,
        feature_inversion,
        membership_hook,
        victim_dice,
    )
    from napari_invert.defences.taps import ExposedTapper

    k = int(fold["fold"])
    result_path = folder.defended_result(variant, k, arch, spec.slug)
    if result_path.is_file():
        try:
            read_result(result_path)
            return result_path
        except DataError as exc:  # another format or damaged: measure again, reusing the networks
            log.warning("%s; measuring it again", exc)
    t0 = time.perf_counter()
    members = list(fold["private"])
    attackers = list(fold["attack"])
    holdout = list(fold.get("holdout") or [])
    unseen = holdout or attackers

    # 1. the defended victim (members only)
    _model, deployed, info = _defended_victim(
        config, folder, data, variant, k, members, arch, spec, device, progress, should_stop
    )

    # 2. the attacker, retrained from scratch against the defended victim (its own data only)
    tapper = ExposedTapper(deployed)
    dstem = folder.defended_decoder_stem(variant, k, arch, spec.slug)
    cfg = config.attack
    if dstem.with_suffix(".json").is_file():
        decoder, _ = load_decoder(dstem, device)
    else:
        torch.manual_seed(cfg.train.seed + 1000 * k)
        sample = torch.from_numpy(data.images[attackers[0]][None, None]).to(device)
        decoder = InversionDecoder.for_tapper(tapper, sample, cfg.decoder_base_filters)
        train_inversion_decoder(
            tapper,
            decoder,
            [data.images[s] for s in attackers],
            cfg.train.model_copy(update={"seed": cfg.train.seed + 1000 * k}),
            device,
            loss=cfg.loss,
            checkpoint_stem=dstem.with_name("decoder_resume"),
            curve_path=folder.defended_decoder_curve(variant, k, arch, spec.slug),
            progress=progress,
            should_stop=should_stop,
            # random defences: a fresh noise draw at every step (as at attack time), never one
            # cached draw per image the decoder could learn by heart
            cache_taps=False if spec.kind == "noise" else None,
        )
        save_decoder(
            dstem,
            decoder,
            {"variant": variant, "fold": k, "arch": arch, "defence": spec.slug, "trained_on": attackers},
        )

    # 3. reconstructions of members (and held-out non-members)
    targets = members + holdout
    recons = reconstruct(tapper, decoder, [data.images[s] for s in targets], device)
    for sid, recon in zip(targets, recons):
        save_nifti(
            folder.defended_recon(variant, k, arch, spec.slug, sid), recon.astype(np.float32), data.affine
        )

    # 4. measurements
    prior = _prior(folder, data, variant, fold)
    originals = np.stack([data.images[s] for s in data.ids])
    masks = np.stack([data.masks[s] for s in data.ids])
    index = {s: i for i, s in enumerate(data.ids)}
    fi = feature_inversion(
        np.stack(recons[: len(members)]),
        [index[s] for s in members],
        originals,
        masks,
        prior,
        data.data_range,
    )
    fi["subjects"] = members
    if holdout:
        nm = feature_inversion(
            np.stack(recons[len(members) :]),
            [index[s] for s in holdout],
            originals,
            masks,
            prior,
            data.data_range,
        )
        fi["non_member_ssim_gain"] = nm["ssim_gain"]
        fi["non_member_top1"] = nm["top1"]
    dice_unseen = victim_dice(deployed, [data.images[s] for s in unseen], [data.labels[s] for s in unseen])
    dice_members = victim_dice(deployed, [data.images[s] for s in members], [data.labels[s] for s in members])
    hooked = membership_hook(
        deployed,
        [(s, data.images[s], data.labels[s]) for s in members],
        [(s, data.images[s], data.labels[s]) for s in unseen],
        {
            "variant": variant,
            "fold": k,
            "arch": arch,
            "defence": spec.slug,
            "attacks": config.membership.attacks,
        },
    )
    if hooked is None:
        mia = {
            "attack": "dice-threshold (built-in fallback)",
            "auc": auc_mann_whitney(dice_members, dice_unseen),
            "member_scores": dice_members,
            "non_member_scores": dice_unseen,
        }
    else:
        mia = dict(hooked)
    result = {
        "format_version": RESULT_FORMAT_VERSION,
        "variant": variant,
        "fold": k,
        "arch": arch,
        "defence": spec.to_dict(),
        "defence_info": info,
        "tap": "exposed",
        "exposed": list(tapper.names),
        "utility": {
            "what": "victim mean foreground Dice on subjects it never trained on",
            "subjects": unseen,
            "unseen_are": "held-out non-members" if holdout else "the attacker's subjects",
            "dice": dice_unseen,
        },
        "feature_inversion": {
            "threat_model": "feature inversion",
            "metric": "ssim (windowed, inside the candidate's brain mask)",
            **fi,
        },
        "training_data_leakage": {
            "threat_model": "training-data leakage",
            "members": members,
            "non_members": unseen,
            **mia,
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json_atomic(result_path, result)
    log.info("defended %s %s fold %d %s@%s done", variant, arch, k, arch, spec.slug)
    return result_path
