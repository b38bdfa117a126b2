"""The k-fold inversion study: victims trained on private folds, attackers on the rest.

For every variant (skull-stripped / full-head), fold and architecture the runner

1. trains the victim segmenter on the fold's *private* subjects (the members),
2. for every tap option of that architecture trains an inversion decoder on the fold's
   *attack* subjects only (the attacker never sees a private or held-out image),
3. reconstructs every private subject, every *held-out* subject (non-members: the
   members-versus-non-members control) and, for reference, the attack subjects, and writes
   the reconstructions on the model grid and (private and held-out) on each subject's native
   grid and affine;
4. runs the untrained-victim control (``controls.untrained_victim``): the same architecture
   at the initialisation the trained victim started from, saved as ``<arch>@untrained``, and
   attacked exactly like the trained one (feature inversion does not need a trained network:
   this control measures how much of each result survives without training).

Each finished step is recorded in ``manifest.json``; rerunning the same command skips
finished steps and resumes an interrupted training from its last checkpoint. Every file
is written atomically, so a crash never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert._threads import restores_threads
from napari_invert.config import StudyConfig, dump_config, parse_config
from napari_invert.errors import ConfigError
from napari_invert.study.layout import StudyFolder
from napari_invert.study.splits import Fold, make_splits, resolve_holdout, splits_document
from napari_invert.threat_models import UNTRAINED, arch_key

log = logging.getLogger(__name__)

#: Settings that may differ between runs of one study folder without invalidating it:
#: where and how fast it runs, and how it is evaluated afterwards.
_RUNTIME_KEYS = ("device", "num_threads", "jobs", "evaluation", "name", "defences", "execution")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _comparable(config_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config_dict.items() if k not in _RUNTIME_KEYS}


class StudyRunner:
    """Run (or resume) a study described by ``config`` into the folder ``out_dir``.

    Parameters
    ----------
    config
        The validated study configuration.
    out_dir
        Study folder; created if needed. A folder made with a different configuration is
        refused (ConfigError) rather than silently mixed.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``; overrides ``config.device`` when given.
    folds, variants, architectures
        Restrict the run to a subset (default: everything in the config).
    progress
        Show tqdm progress bars.
    should_stop
        Polled at every training step; when it returns True the current training saves a
        checkpoint and :class:`~napari_invert.models.Cancelled` is raised (rerun to resume).
    on_step
        ``on_step(step_key, step, total, loss)`` after every training step (GUI progress).
    """

    def __init__(
        self,
        config: StudyConfig,
        out_dir: str | Path,
        device: str | None = None,
        folds: Iterable[int] | None = None,
        variants: Iterable[str] | None = None,
        architectures: Iterable[str] | None = None,
        progress: bool = True,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[str, int, int, float], None] | None = None,
    ) -> None:
        self.config = config
        self.should_stop = should_stop
        self.on_step = on_step
        self.folder = StudyFolder(Path(out_dir))
        self.device_name = device or config.device
        self.only_folds = None if folds is None else sorted(set(folds))
        self.only_variants = None if variants is None else list(variants)
        self.only_archs = None if architectures is None else list(architectures)
        self.progress = progress
        self._manifest: dict[str, Any] = {}
        if self.only_folds is not None:
            bad = [f for f in self.only_folds if not 0 <= f < config.folds]
            if bad:
                raise ConfigError(f"--folds: {bad} outside 0..{config.folds - 1}")
        for name, chosen, allowed in (
            ("variants", self.only_variants, config.preprocess.variants),
            ("architectures", self.only_archs, config.segmenter.architectures),
        ):
            if chosen is not None and not set(chosen) <= set(allowed):
                raise ConfigError(f"--{name}: {sorted(set(chosen) - set(allowed))} not in the config")

    # -- manifest ----------------------------------------------------------------------
    def _done(self, key: str) -> bool:
        return key in self._manifest.get("steps", {})

    def _mark(self, key: str, **info: Any) -> None:
        """Record a finished step (merged under a file lock: parallel fold jobs share it)."""
        with _manifest_lock(self.folder):
            on_disk = self.folder.read_manifest()
            on_disk.setdefault("steps", {}).update(self._manifest.get("steps", {}))
            on_disk["steps"][key] = {"finished": _now(), **info}
            self.folder.write_manifest(on_disk)
            self._manifest = on_disk

    # -- set-up --------------------------------------------------------------------------
    def _step_callback(self, key: str) -> Callable[[int, int, float], None] | None:
        if self.on_step is None:
            return None
        on_step = self.on_step
        return lambda step, total, loss: on_step(key, step, total, loss)

    def _check_or_write_config(self) -> None:
        root = self.folder.root
        root.mkdir(parents=True, exist_ok=True)
        current = self.config.model_dump(mode="json")
        if self.folder.config_path.exists():
            try:
                raw = yaml.safe_load(self.folder.config_path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{self.folder.config_path}: unreadable ({exc})") from None
            # Validate through the schema so keys added with defaults in newer versions compare equal.
            previous = parse_config(raw, source=str(self.folder.config_path)).model_dump(mode="json")
            if _comparable(previous) != _comparable(current):
                diff = sorted(
                    k
                    for k in set(previous) | set(current)
                    if k not in _RUNTIME_KEYS and previous.get(k) != current.get(k)
                )
                raise ConfigError(
                    f"{root}: this study folder was made with a different configuration "
                    f"(differs in: {', '.join(diff)}); choose a new --out folder"
                )
        write_text_atomic(self.folder.config_path, dump_config(self.config))

    def _load_cohort(self):  # -> Cohort
        from napari_invert.data.from_config import open_cohort

        return open_cohort(self.config.cohort, self.folder.root / "demo_cohort", self.progress)[0]

    def _splits(self, subject_ids: list[str]) -> list[Fold]:
        holdout = resolve_holdout(self.config.holdout, len(subject_ids), self.config.folds)
        try:
            folds = make_splits(subject_ids, self.config.folds, self.config.split_seed, holdout)
        except ValueError as exc:
            raise ConfigError(f"{self.folder.config_path}: holdout/folds: {exc}") from None
        doc = splits_document(folds, self.config.split_seed)
        if self.folder.splits_path.exists():
            if self.folder.read_splits() != doc:
                raise ConfigError(f"{self.folder.splits_path}: splits differ from this configuration")
        else:
            write_json_atomic(self.folder.splits_path, doc)
        return folds

    def _prepare(self, cohort, variant: str):  # -> PreparedCohort
        from napari_invert.data.nifti import save_nifti
        from napari_invert.data.prepare import prepare_cohort

        prepared = prepare_cohort(
            cohort,
            self.config.preprocess,
            multiple_of=self.config.multiple_of,
            variant=variant,
            label_mode=self.config.cohort.label_mode,
            cache_dir=(self.folder.root / "cache") if self.config.preprocess.cache else None,
            progress=self.progress,
        )
        key = f"data:{variant}"
        if not self._done(key):
            for s in prepared.subjects:
                # Each subject keeps its own model-grid affine (cohorts such as IXI are not
                # co-registered; all share one grid *shape*, which is what metrics need).
                save_nifti(self.folder.original(variant, s.subject_id), s.image, s.affine)
                save_nifti(self.folder.mask(variant, s.subject_id), s.mask.astype(np.uint8), s.affine)
                if s.labels is not None:
                    save_nifti(self.folder.labels(variant, s.subject_id), s.labels, s.affine)
            self._mark(key, subjects=len(prepared.subjects))
        return prepared

    # -- the study -------------------------------------------------------------------------
    @restores_threads
    def run(self) -> StudyFolder:
        """Run every unfinished step; returns the study folder."""
        from napari_invert.device import resolve_device, set_threads

        t_start = time.perf_counter()
        self._check_or_write_config()
        self._manifest = self.folder.read_manifest()
        if self.config.num_threads:
            set_threads(self.config.num_threads)
        device = resolve_device(self.device_name)
        log.info("study %s on %s", self.folder.root, device)

        cohort = self._load_cohort()
        subject_ids = [s.subject_id for s in cohort.subjects]
        folds = self._splits(subject_ids)
        variants = self.only_variants or list(self.config.preprocess.variants)
        prepared_by_variant = {v: self._prepare(cohort, v) for v in variants}

        first = next(iter(prepared_by_variant.values()))
        write_json_atomic(
            self.folder.cohort_path,
            {
                "name": cohort.name,
                "kind": self.config.cohort.kind,
                "root": str(cohort.root),
                "subject_ids": subject_ids,
                "variants": variants,
                "label_table": first.label_table.to_dict(),
                "n_classes": first.label_table.n_classes,
                "affine": np.asarray(first.affine).tolist(),
                "shape": list(first.shape),
            },
        )

        for variant, prepared in prepared_by_variant.items():
            by_id = {s.subject_id: s for s in prepared.subjects}
            for fold in folds:
                if self.only_folds is not None and fold.fold not in self.only_folds:
                    continue
                self._run_fold(variant, fold, by_id, prepared, device)
        with _manifest_lock(self.folder):
            self._manifest = self.folder.read_manifest()
            self._manifest["last_run_seconds"] = round(time.perf_counter() - t_start, 1)
            self.folder.write_manifest(self._manifest)
        return self.folder

    def _run_fold(self, variant: str, fold: Fold, by_id: dict, prepared, device) -> None:
        from napari_invert.data.nifti import save_nifti

        private = [by_id[s] for s in fold.private]
        holdout = [by_id[s] for s in fold.holdout]
        attack = [by_id[s] for s in fold.attack]
        prior_path = self.folder.prior(variant, fold.fold)
        if not prior_path.exists():
            # The attacker's prior: mean of its own images only.
            prior = np.mean([s.image for s in attack], axis=0).astype(np.float32)
            save_nifti(prior_path, prior, prepared.affine)
        archs = self.only_archs or list(self.config.segmenter.architectures)
        targets = [*private, *holdout]  # members, then non-members
        for arch in archs:
            model = self._train_segmenter(variant, fold, arch, private, prepared, device)
            self._test_on_unseen(variant, fold, arch, model, private, attack)
            for tap in self.config.attack.taps.get(arch, []):
                self._attack(variant, fold, arch, tap, model, targets, attack, prepared, device)
            if self.config.membership.enabled and holdout:
                # Members are the subjects the victim took gradient steps on; those it held out to
                # judge convergence ("validated_on") are neither members nor non-members.
                members = self._fitted_subjects(fold, private)
                self._membership(variant, fold, arch, model, members, holdout, attack, device)
            if self.config.controls.untrained_victim:
                control = self._untrained_segmenter(variant, fold, arch, prepared, device)
                control_key = arch_key(arch, UNTRAINED)
                for tap in self.config.attack.taps.get(arch, []):
                    self._attack(variant, fold, control_key, tap, control, targets, attack, prepared, device)

    def _train_segmenter(self, variant: str, fold: Fold, arch: str, private: list, prepared, device):
        from napari_invert.models import load_segmenter, save_segmenter, train_segmenter

        key = f"segmenter:{variant}:fold{fold.fold}:{arch}"
        stem = self.folder.segmenter_stem(variant, fold.fold, arch)
        if self._done(key):
            model, _ = load_segmenter(stem, device)
            return model
        model = self._initial_segmenter(arch, fold, prepared)
        train_cfg = self._victim_train_config(fold)
        t0 = time.perf_counter()
        history = train_segmenter(
            model,
            [s.image for s in private],
            [s.labels for s in private],
            train_cfg,
            device,
            checkpoint_stem=stem.with_name("segmenter_resume"),
            curve_path=self.folder.segmenter_curve(variant, fold.fold, arch),
            progress=self.progress,
            on_step=self._step_callback(key),
            should_stop=self.should_stop,
            description=f"{variant} fold {fold.fold} {arch} victim",
            convergence_path=self.folder.segmenter_convergence(variant, fold.fold, arch),
            record_info=_record_info(variant, fold.fold, arch, None, private),
        )
        seconds = time.perf_counter() - t0
        save_segmenter(
            stem,
            model,
            {
                "variant": variant,
                "fold": fold.fold,
                "trained_on": list(fold.private),
                **_fit_split(train_cfg, private),
                "label_table": prepared.label_table.to_dict(),
                "seconds": round(seconds, 1),
            },
        )
        final_loss = float(history[-1]["loss"]) if history else float("nan")
        self._mark(key, seconds=round(seconds, 1), final_loss=final_loss)
        return model

    def _test_on_unseen(
        self, variant: str, fold: Fold, arch: str, model, private: list, unseen: list
    ) -> None:
        """The victim's verdict on the fold's unseen subjects, stored in its convergence record
        (:func:`napari_invert.study.unseen_test.ensure_unseen_test`)."""
        from napari_invert.study.unseen_test import ensure_unseen_test

        cfg = self.config.segmenter_training
        test = ensure_unseen_test(
            self.folder.segmenter_convergence(variant, fold.fold, arch),
            model,
            self._fitted_subjects(fold, private),
            unseen,
            cfg.min_validation_dice,
            cfg.min_dice_gain,
        )
        if test is not None:
            log.info("%s fold %d %s victim: %s", variant, fold.fold, arch, test["reason"])

    def _fitted_subjects(self, fold: Fold, private: list) -> list:
        """The private subjects the fold's victim took gradient steps on (not its validation ones)."""
        fitted = set(_fit_split(self._victim_train_config(fold), private)["fitted_on"])
        return [s for s in private if s.subject_id in fitted]

    def _victim_train_config(self, fold: Fold):  # -> TrainConfig
        """The victim's training settings for ``fold`` (its seed differs per fold)."""
        base = self.config.segmenter_training
        return base.model_copy(update={"seed": base.seed + 1000 * fold.fold})

    def _membership(self, variant: str, fold: Fold, arch: str, model, members, nonmembers, attack, device):
        """Membership inference against the trained victim (threat model: training-data leakage):
        members = the fold's private subjects, non-members = its held-out subjects; the attacker's
        shadow segmenters train on halves of its own subjects with the victim's settings."""
        from napari_invert.membership import run_membership_inference

        key = f"membership:{variant}:fold{fold.fold}:{arch}"
        if self._done(key):
            return
        if any(s.labels is None for s in (*members, *nonmembers, *attack)):
            log.warning(
                "membership inference skipped for %s fold %d: subjects without labels", arch, fold.fold
            )
            self._mark(key, skipped="subjects without labels")
            return
        t0 = time.perf_counter()
        doc = run_membership_inference(
            self.folder,
            self.config.membership,
            variant=variant,
            fold=fold.fold,
            arch=arch,
            victim=model,
            members=members,
            nonmembers=nonmembers,
            attacker_subjects=attack,
            train_config=self._victim_train_config(fold),
            device=device,
            progress=self.progress,
            should_stop=self.should_stop,
        )
        aucs = {name: round(float(a["auc"]), 3) for name, a in doc.get("attacks", {}).items()}
        self._mark(key, seconds=round(time.perf_counter() - t0, 1), auc=aucs)

    def _initial_segmenter(self, arch: str, fold: Fold, prepared):  # -> Segmenter
        """The victim at initialisation, seeded per fold (the trained victim's starting point)."""
        import torch

        from napari_invert.models import build_segmenter

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.segmenter_training.seed + 1000 * fold.fold + 17)
            return build_segmenter(arch, self.config.segmenter, n_classes=prepared.label_table.n_classes)

    def _untrained_segmenter(self, variant: str, fold: Fold, arch: str, prepared, device):
        """The untrained-victim control: saved as ``<arch>@untrained`` so the evaluation scores it
        like any victim (its Dice shows it does not segment)."""
        from napari_invert.models import load_segmenter, save_segmenter

        key = f"segmenter:{variant}:fold{fold.fold}:{arch_key(arch, UNTRAINED)}"
        stem = self.folder.segmenter_stem(variant, fold.fold, arch_key(arch, UNTRAINED))
        if self._done(key):
            model, _ = load_segmenter(stem, device)
            return model
        model = self._initial_segmenter(arch, fold, prepared).to(device)
        save_segmenter(
            stem,
            model,
            {
                "variant": variant,
                "fold": fold.fold,
                "trained_on": [],
                "control": UNTRAINED,
                "label_table": prepared.label_table.to_dict(),
            },
        )
        self._mark(key, control=UNTRAINED)
        return model

    def _decoder_settings(self, variant: str, fold: Fold, arch: str, tap: str) -> dict[str, Any]:
        """What a study decoder must have been trained with; stored in ``decoder.json`` and
        compared on reuse so a decoder trained elsewhere (the plugin, another config) is refused."""
        cfg = self.config.attack
        return {
            "variant": variant,
            "fold": fold.fold,
            "arch": arch,
            "tap": tap,
            "trained_on": list(fold.attack),
            "loss": cfg.loss,
            "decoder_base_filters": cfg.decoder_base_filters,
            "train": cfg.train.model_dump(mode="json"),
        }

    def _attack(self, variant, fold: Fold, arch, tap, model, targets: list, attack, prepared, device) -> None:
        """Train (or reuse) the decoder for ``tap`` on ``attack`` and reconstruct ``targets``
        (private + held-out subjects; the attack subjects too, for reference, when configured)."""
        import torch

        from napari_invert.attack import (
            InversionDecoder,
            load_decoder,
            make_tapper,
            reconstruct,
            save_decoder,
            train_inversion_decoder,
        )
        from napari_invert.data.nifti import save_nifti

        key = f"attack:{variant}:fold{fold.fold}:{arch}:{tap}"
        if self._done(key):
            return
        cfg = self.config.attack
        stem = self.folder.decoder_stem(variant, fold.fold, arch, tap)
        tapper = make_tapper(model, tap)
        t0 = time.perf_counter()
        settings = self._decoder_settings(variant, fold, arch, tap)
        if (stem.parent / "decoder.json").exists():
            decoder, meta = load_decoder(stem, device)
            stored = {k: meta.get(k) for k in settings}
            if stored != settings:
                differ = sorted(k for k in settings if stored.get(k) != settings[k])
                raise ConfigError(
                    f"{stem.parent / 'decoder.json'}: this decoder was not trained with this study's "
                    f"settings (differs in: {', '.join(differ)}); move it away to retrain"
                )
        else:
            torch.manual_seed(cfg.train.seed + 1000 * fold.fold)
            sample = torch.from_numpy(attack[0].image[None, None]).to(device)
            decoder = InversionDecoder.for_tapper(tapper, sample, cfg.decoder_base_filters)
            train_cfg = cfg.train.model_copy(update={"seed": cfg.train.seed + 1000 * fold.fold})
            train_inversion_decoder(
                tapper,
                decoder,
                [s.image for s in attack],  # the attacker's own data ONLY
                train_cfg,
                device,
                loss=cfg.loss,
                checkpoint_stem=stem.with_name("decoder_resume"),
                curve_path=self.folder.decoder_curve(variant, fold.fold, arch, tap),
                progress=self.progress,
                on_step=self._step_callback(key),
                should_stop=self.should_stop,
                description=f"{variant} fold {fold.fold} {arch} {tap} decoder",
                convergence_path=self.folder.decoder_convergence(variant, fold.fold, arch, tap),
                record_info=_record_info(variant, fold.fold, arch, tap, attack),
            )
            save_decoder(stem, decoder, {**settings, **_fit_split(train_cfg, attack)})
        targets = list(targets) + (list(attack) if cfg.reconstruct_attack_subjects else [])
        recons = reconstruct(tapper, decoder, [s.image for s in targets], device)
        for subject, recon in zip(targets, recons):
            recon = recon.astype(np.float32)
            sid = subject.subject_id
            save_nifti(self.folder.recon(variant, fold.fold, arch, tap, sid), recon, subject.affine)
            if sid in fold.private or sid in fold.holdout:
                # Private (and held-out) reconstructions are the evidence: also write them on the
                # subject's own grid and affine (the attack-set ones are kept on the model grid only;
                # resampling 40 volumes to 1 mm would dominate the run time on a CPU).
                native, native_affine = subject.to_native(recon, order=1)
                save_nifti(
                    self.folder.recon_native(variant, fold.fold, arch, tap, sid),
                    native.astype(np.float32),
                    native_affine,
                )
        self._mark(key, seconds=round(time.perf_counter() - t0, 1), reconstructed=len(targets))


def _record_info(variant: str, fold: int, arch: str, tap: str | None, subjects: list) -> dict[str, Any]:
    """Where a convergence record belongs, and the ids behind its subject indices."""
    return {
        "variant": variant,
        "fold": fold,
        "arch": arch,
        "tap": tap,
        "subject_ids": [s.subject_id for s in subjects],
    }


def _fit_split(train_cfg, subjects: list) -> dict[str, list[str]]:
    """``fitted_on`` (gradient steps) and ``validated_on`` (held out to judge convergence) ids."""
    from napari_invert.models.validation import split_validation

    split = split_validation(len(subjects), train_cfg)
    return {
        "fitted_on": [subjects[i].subject_id for i in split.train],
        "validated_on": [subjects[i].subject_id for i in split.validation],
    }


@contextlib.contextmanager
def _manifest_lock(folder: StudyFolder) -> Iterator[None]:
    """Exclusive lock on ``manifest.lock`` (POSIX ``flock``; a no-op where unavailable)."""
    folder.root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one process per study folder
        yield
        return
    with open(folder.root / "manifest.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_study_parallel(
    config: StudyConfig,
    out_dir: str | Path,
    jobs: int,
    *,
    device: str | None = None,
    folds: Iterable[int] | None = None,
    progress: bool = True,
    backend: str | None = None,
    address: str | None = None,
    variants: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
    ray_init: dict[str, Any] | None = None,
) -> StudyFolder:
    """Run the study as independent (variant, fold, architecture) units on an executor.

    ``backend``: ``local`` (``jobs`` spawned processes, one torch thread per unit by
    default) or ``ray`` (Ray tasks on ``address``; ``ray_init`` goes to ``ray.init``);
    default ``config.execution``. Data preparation runs once first, so units only read its
    cache; every unit writes into the shared study folder and merges the manifest under a
    lock (see :mod:`napari_invert.execution.study`).
    """
    from napari_invert.execution import make_executor
    from napari_invert.execution.study import run_study_units

    ex = config.execution
    executor = make_executor(
        backend or ex.backend, jobs=jobs, address=address or ex.address, init_kwargs=ray_init
    )
    return run_study_units(
        config,
        out_dir,
        executor,
        device=device,
        folds=folds,
        variants=variants,
        architectures=architectures,
        progress=progress,
    )


def run_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    device: str | None = None,
    folds: Iterable[int] | None = None,
    progress: bool = True,
) -> StudyFolder:
    """Convenience wrapper: ``StudyRunner(config, out_dir, ...).run()``."""
    return StudyRunner(config, out_dir, device=device, folds=folds, progress=progress).run()
