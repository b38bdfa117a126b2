"""``napari-invert audit``: the inversion attack on the user's own model, as a study folder.

The audit writes an ordinary study folder (:class:`~napari_invert.study.layout.StudyFolder`)
with one fold: ``private`` = the subjects to reconstruct (members of ``trained_on`` and
non-members), ``attack`` = the attacker's own subjects; the user's network is architecture
``user``, the untrained control (same architecture at its initialisation) ``user@untrained``.
``napari-invert evaluate``, the report and ``napari-invert view`` read it unchanged;
``audit.yaml`` (the audit config) and ``audit.json`` (roles, model, taps, threat models,
victim Dice, membership) sit beside ``config.yaml``.

Threat model of the reconstructions: *feature inversion* (the attacker reads the encoder's
outputs for a patient's scan). Whether a patient trained the model matters only for the
*training-data leakage* threat (membership inference, via :mod:`.membership`; by default
the threshold attacks of :mod:`.leakage`, plus LiRA against shadow copies of the
user's architecture with ``membership.lira``, written as the study's ``membership.json`` for
architecture ``user``), reported only when ``trained_on`` is known and ``holdout`` given.

Taps are read on whole volumes padded to the network's multiple (encoders are fully
convolutional), also for patch-trained models; segmentation of patch-trained models uses a
sliding window of ``model.patch_size``. Every finished step is in ``manifest.json``; a rerun
skips it. Files are written atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from napari_invert._io import write_json_atomic, write_text_atomic
from napari_invert._threads import restores_threads
from napari_invert.audit.subjects import AuditRoles, resolve_subjects
from napari_invert.audit_config import AuditConfig, parse_audit_config
from napari_invert.config import dump_config
from napari_invert.errors import ConfigError
from napari_invert.study.layout import StudyFolder
from napari_invert.threat_models import UNTRAINED, arch_key

log = logging.getLogger(__name__)

ARCH = "user"
CONTROL_ARCH = arch_key(ARCH, UNTRAINED)  # "user@untrained", like a study's "<arch>@untrained"
FOLD = 0
_RUNTIME_KEYS = ("device", "num_threads", "evaluation", "name")


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class AuditRunner:
    """Run (or resume) the audit described by ``config`` into ``out_dir``.

    ``adapter``: an already loaded :class:`~napari_invert.models.sources.ModelAdapter`
    (default: read ``config.model``). ``on_step(key, step, total, loss)`` and
    ``should_stop()`` as for :class:`~napari_invert.study.runner.StudyRunner`.
    """

    def __init__(
        self,
        config: AuditConfig,
        out_dir: str | Path,
        device: str | None = None,
        progress: bool = True,
        adapter: Any = None,
        on_step=None,
        should_stop=None,
    ) -> None:
        self.config = config
        self.folder = StudyFolder(Path(out_dir))
        self.device_name = device or config.device
        self.progress = progress
        self.adapter = adapter
        self.on_step = on_step
        self.should_stop = should_stop
        self._manifest: dict[str, Any] = {}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _done(self, key: str) -> bool:
        return key in self._manifest.get("steps", {})

    def _mark(self, key: str, **info: Any) -> None:
        self._manifest.setdefault("steps", {})[key] = {"finished": _now(), **info}
        self.folder.write_manifest(self._manifest)

    def _check_or_write_audit_config(self) -> None:
        root = self.folder.root
        root.mkdir(parents=True, exist_ok=True)
        path = root / "audit.yaml"
        current = self.config.model_dump(mode="json")
        if path.exists():
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            previous = parse_audit_config(raw, source=str(path)).model_dump(mode="json")
            diff = sorted(
                k
                for k in set(previous) | set(current)
                if k not in _RUNTIME_KEYS and previous.get(k) != current.get(k)
            )
            if diff:
                raise ConfigError(
                    f"{root}: this audit folder was made with a different configuration "
                    f"(differs in: {', '.join(diff)}); choose a new --out folder"
                )
        elif self.folder.config_path.exists():
            raise ConfigError(f"{root}: holds a study that is not an audit; choose a new --out folder")
        write_text_atomic(path, yaml.safe_dump(current, sort_keys=False))

    def _cohort(self):
        from napari_invert.data.from_config import open_cohort

        return open_cohort(self.config.cohort, self.folder.root / "demo_cohort", self.progress)

    # -- the audit ---------------------------------------------------------------------------
    @restores_threads
    def run(self) -> StudyFolder:
        """Run every unfinished step; returns the study folder."""
        import torch

        from napari_invert.data.prepare import prepare_cohort
        from napari_invert.device import resolve_device, set_threads
        from napari_invert.models.sources import load_model_source

        t_start = time.perf_counter()
        cfg = self.config
        self._check_or_write_audit_config()
        self._manifest = self.folder.read_manifest()
        if cfg.num_threads:
            set_threads(cfg.num_threads)
        device = resolve_device(self.device_name)
        adapter = self.adapter or load_model_source(cfg.model)
        adapter.to(device)
        discovery = adapter.discovery
        taps = [(entry, *adapter.resolve_tap(entry)) for entry in cfg.attack.taps]
        names = [t[1] for t in taps]
        if len(set(names)) != len(names):
            raise ConfigError(f"attack.taps: two taps share a name ({names})")

        cohort, cohort_path = self._cohort()
        subject_ids = [s.subject_id for s in cohort.subjects]
        roles = resolve_subjects(cfg.subjects, subject_ids)
        variant = cfg.variant
        prepared = prepare_cohort(
            cohort,
            cfg.preprocess,
            multiple_of=adapter.multiple_of,
            variant=variant,
            label_mode=cfg.cohort.label_mode,
            cache_dir=(self.folder.root / "cache") if cfg.preprocess.cache else None,
            progress=self.progress,
        )
        adapter.check_grid(prepared.shape, channels=1)
        try:
            with torch.no_grad():
                out = adapter.forward(torch.zeros((1, 1, *prepared.shape), device=device))
        except RuntimeError as exc:
            raise ConfigError(
                f"model: the network fails on the preprocessed grid {prepared.shape} "
                f"({' '.join(str(exc).split())[:160]}); "
                "match preprocess.voxel_mm / model.patch_size to training"
            ) from None
        del out

        study_cfg = cfg.study_config()
        if cfg.cohort.kind == "demo" and cfg.cohort.path is None:
            study_cfg.cohort = study_cfg.cohort.model_copy(update={"path": Path(cohort_path)})
        write_text_atomic(self.folder.config_path, dump_config(study_cfg))
        write_json_atomic(
            self.folder.splits_path,
            {
                "seed": 0,
                "n_folds": 1,
                "folds": [{"fold": FOLD, "private": roles.targets, "attack": roles.attack}],
                "audit": True,
            },
        )
        write_json_atomic(
            self.folder.cohort_path,
            {
                "name": cohort.name,
                "kind": cfg.cohort.kind,
                "root": str(cohort.root),
                "subject_ids": subject_ids,
                "variants": [variant],
                "label_table": None if prepared.label_table is None else prepared.label_table.to_dict(),
                "n_classes": prepared.n_classes,
                "affine": np.asarray(prepared.affine).tolist(),
                "shape": list(prepared.shape),
            },
        )
        by_id = {s.subject_id: s for s in prepared.subjects}
        self._write_data(prepared, variant)
        attack = [by_id[s] for s in roles.attack]
        targets = [by_id[s] for s in roles.targets]
        prior_path = self.folder.prior(variant, FOLD)
        if not prior_path.exists():
            from napari_invert.data.nifti import save_nifti

            save_nifti(
                prior_path, np.mean([s.image for s in attack], axis=0).astype(np.float32), prepared.affine
            )

        victims: list[tuple[str, Any]] = [(ARCH, adapter)]
        control_note = "off (controls.untrained_victim: false)"
        if cfg.controls.untrained_victim:
            control, reason = adapter.untrained(cfg.controls.seed)
            if control is None:
                control_note = f"unavailable: {reason}"
                log.warning(control_note)
            else:
                victims.append((CONTROL_ARCH, control))
                control_note = (
                    f"the same architecture at its initialisation (re-built, seed {cfg.controls.seed})"
                )
        for _entry, name, layers in taps:  # per tap, the model and its control side by side
            for arch, victim in victims:
                self._attack(arch, victim, name, layers, attack, targets, variant, device)

        victim_dice = self._victim_dice(adapter, prepared, roles)
        from napari_invert.audit.membership import run_membership

        membership = (
            run_membership(
                adapter,
                [by_id[s] for s in roles.members],
                [by_id[s] for s in roles.holdout],  # declared non-members
                attack,
                self.folder,
                cfg,
                control=dict(victims).get(CONTROL_ARCH),
                device=device,
                progress=self.progress,
            )
            if roles.trained_on is not None
            else {
                "threat_model": "training-data leakage",
                "status": "not reported: trained_on is unknown (only feature inversion is measured)",
            }
        )
        write_json_atomic(
            self.folder.root / "audit.json",
            {
                "name": cfg.name,
                "model": adapter.description,
                "in_channels": adapter.in_channels,
                "out_channels": adapter.out_channels,
                "multiple_of": adapter.multiple_of,
                "grid": list(prepared.shape),
                "voxel_mm": list(prepared.voxel_mm),
                "subjects": roles.to_dict(),
                "threat_models": {
                    "feature inversion": "reconstructions of every target from what the tapped layers output "
                    "for its scan (architectures 'user' and control 'user@untrained')",
                    "training-data leakage": "membership"
                    if roles.trained_on is not None
                    else "not reported (trained_on unknown)",
                },
                "taps": {name: layers for _, name, layers in taps},
                "roles": discovery.roles,
                "untrained_control": control_note,
                "victim_dice": victim_dice,
                "membership": membership,
                "tap_reading": "whole volumes padded to the network's multiple"
                + (f"; segmentation by sliding window {adapter.patch_size}" if adapter.patch_size else ""),
            },
        )
        self._manifest["last_run_seconds"] = round(time.perf_counter() - t_start, 1)
        self.folder.write_manifest(self._manifest)
        return self.folder

    def _write_data(self, prepared, variant: str) -> None:
        from napari_invert.data.nifti import save_nifti

        key = f"data:{variant}"
        if self._done(key):
            return
        for s in prepared.subjects:
            save_nifti(self.folder.original(variant, s.subject_id), s.image, s.affine)
            save_nifti(self.folder.mask(variant, s.subject_id), s.mask.astype(np.uint8), s.affine)
            if s.labels is not None:
                save_nifti(self.folder.labels(variant, s.subject_id), s.labels, s.affine)
        self._mark(key, subjects=len(prepared.subjects))

    def _attack(
        self, arch: str, victim, tap: str, layers: list[str], attack, targets, variant, device
    ) -> None:
        import torch

        from napari_invert.attack import (
            InversionDecoder,
            load_decoder,
            reconstruct,
            save_decoder,
            train_inversion_decoder,
        )
        from napari_invert.data.nifti import save_nifti

        key = f"attack:{variant}:fold{FOLD}:{arch}:{tap}"
        if self._done(key):
            return
        cfg = self.config.attack
        stem = self.folder.decoder_stem(variant, FOLD, arch, tap)
        tapper = victim.tapper(layers)
        t0 = time.perf_counter()
        if (stem.parent / "decoder.json").exists():
            decoder, _ = load_decoder(stem, device)
        else:
            torch.manual_seed(cfg.train.seed)
            sample = torch.from_numpy(attack[0].image[None, None]).to(device)
            decoder = InversionDecoder.for_tapper(tapper, sample, cfg.decoder_base_filters)
            on_step = None
            if self.on_step is not None:
                cb = self.on_step
                on_step = lambda step, total, loss: cb(key, step, total, loss)  # noqa: E731
            train_inversion_decoder(
                tapper,
                decoder,
                [s.image for s in attack],  # the attacker's own data ONLY
                cfg.train,
                device,
                loss=cfg.loss,
                checkpoint_stem=stem.with_name("decoder_resume"),
                curve_path=self.folder.decoder_curve(variant, FOLD, arch, tap),
                progress=self.progress,
                on_step=on_step,
                should_stop=self.should_stop,
            )
            save_decoder(
                stem,
                decoder,
                {
                    "variant": variant,
                    "fold": FOLD,
                    "arch": arch,
                    "tap": tap,
                    "layers": layers,
                    "threat_model": "feature inversion",
                    "victim": "untrained control" if arch == CONTROL_ARCH else "user model",
                    "trained_on": [s.subject_id for s in attack],
                },
            )
        chosen = list(targets) + (list(attack) if cfg.reconstruct_attack_subjects else [])
        recons = reconstruct(tapper, decoder, [s.image for s in chosen], device)
        target_ids = {s.subject_id for s in targets}
        for subject, recon in zip(chosen, recons):
            sid = subject.subject_id
            save_nifti(
                self.folder.recon(variant, FOLD, arch, tap, sid), recon.astype(np.float32), subject.affine
            )
            if sid in target_ids:
                native, native_affine = subject.to_native(recon, order=1)
                save_nifti(
                    self.folder.recon_native(variant, FOLD, arch, tap, sid),
                    native.astype(np.float32),
                    native_affine,
                )
        self._mark(key, seconds=round(time.perf_counter() - t0, 1), reconstructed=len(chosen), layers=layers)

    def _victim_dice(self, adapter, prepared, roles: AuditRoles) -> dict[str, Any]:
        """Mean Dice of the user's model per role (tells whether it segments at all)."""
        from napari_invert.metrics import mean_dice

        n = prepared.n_classes
        if prepared.label_table is None:
            return {"status": "no labels in the cohort"}
        if adapter.out_channels != n:
            return {
                "status": f"not computed: the model outputs {adapter.out_channels} channels, the cohort's "
                f"label table has {n} classes (label_mode {self.config.cohort.label_mode})"
            }
        by_id = {s.subject_id: s for s in prepared.subjects}
        groups = {"members": roles.members, "non_members": roles.non_members, "attack": roles.attack}
        if roles.trained_on is None:
            groups = {"targets": roles.targets, "attack": roles.attack}
        out: dict[str, Any] = {"status": "done", "per_subject": {}}
        for group, ids in groups.items():
            values = []
            for sid in ids:
                s = by_id[sid]
                d = float(mean_dice(adapter.segment(s.image), s.labels, n))
                out["per_subject"][sid] = d
                values.append(d)
            out[group] = float(np.nanmean(values)) if values else None
        return out


def run_audit(config: AuditConfig, out_dir: str | Path, **kwargs: Any) -> StudyFolder:
    """Convenience wrapper: ``AuditRunner(config, out_dir, **kwargs).run()``."""
    return AuditRunner(config, out_dir, **kwargs).run()
