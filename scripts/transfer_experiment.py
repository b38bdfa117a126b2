"""Victim training on a transfer cohort (LPBA40 relabelled/reoriented/rescaled), fold 0.

Measures, per architecture and training setting: best validation Dice (held-out private
subjects), the majority-label baseline, Dice on the fold's unseen (attack) subjects, steps
run, why training stopped and seconds. Run with one torch thread:

    OMP_NUM_THREADS=1 python scripts/transfer_experiment.py --cohort /tmp/transfer \
        --arch segnet --set lr=0.01 --set segmentation_loss=dice_focal

``--config`` (default sample_configs/quick_cpu.yaml) gives preprocessing, segmenter and
training defaults; ``--set key=value`` overrides ``segmenter_training`` keys,
``--seg key=value`` ``segmenter`` keys. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def main() -> None:
    from napari_invert.bench.transfer import build_transfer_cohort
    from napari_invert.config import default_data_root, load_config
    from napari_invert.data.cohort import Cohort
    from napari_invert.data.prepare import prepare_cohort
    from napari_invert.models import build_segmenter, predict, train_segmenter
    from napari_invert.models.validation import majority_label_map, mean_foreground_dice
    from napari_invert.study.splits import make_splits

    ap = argparse.ArgumentParser()
    ap.add_argument("--cohort", default="/tmp/plateau/transfer2mm")
    ap.add_argument("--config", default="sample_configs/quick_cpu.yaml")
    ap.add_argument("--arch", nargs="+", default=["unet", "segnet"])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--seg", action="append", default=[])
    ap.add_argument("--record", default=None, help="folder for convergence records")
    ap.add_argument("--voxel", type=float, default=None, help="override preprocess.voxel_mm")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra training settings compared in one process: 'name:key=value,key=value' (repeatable)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    cohort_dir = Path(args.cohort)
    if not (cohort_dir / "cohort.yaml").exists():
        build_transfer_cohort(cohort_dir, default_data_root() / "lpba40", n_subjects=20, downsample=2)
    config = load_config(args.config)
    tr = config.segmenter_training.model_dump()
    for kv in args.set:
        k, v = kv.split("=", 1)
        tr[k] = yaml.safe_load(v)
    sg = config.segmenter.model_dump()
    for kv in args.seg:
        k, v = kv.split("=", 1)
        sg[k] = yaml.safe_load(v)
    config = config.model_copy(
        update={
            "segmenter_training": type(config.segmenter_training).model_validate(tr),
            "segmenter": type(config.segmenter).model_validate(sg),
        }
    )
    if args.voxel:
        config = config.model_copy(
            update={"preprocess": config.preprocess.model_copy(update={"voxel_mm": args.voxel})}
        )
    variants = [("as_given", {})]
    for text in args.variant:
        name, _, body = text.partition(":")
        variants.append(
            (name, {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in body.split(",") if kv)})
        )
    if args.variant:
        variants = variants[1:]
    cohort = Cohort.from_path(cohort_dir, kind="folder")
    prepared = prepare_cohort(
        cohort,
        config.preprocess,
        multiple_of=config.multiple_of,
        variant="skull_stripped",
        label_mode=config.cohort.label_mode,
        cache_dir=cohort_dir.parent / f"{cohort_dir.name}_cache_{config.preprocess.voxel_mm}",
        progress=False,
    )
    by_id = {s.subject_id: s for s in prepared.subjects}
    fold = make_splits([s.subject_id for s in prepared.subjects], config.folds, config.split_seed)[args.fold]
    private = [by_id[s] for s in fold.private]
    unseen = [by_id[s] for s in fold.attack]
    n_classes = prepared.label_table.n_classes
    for vname, extra in variants:
        for arch in args.arch:
            torch.manual_seed(0)
            model = build_segmenter(arch, config.segmenter, n_classes=n_classes)
            cfg = config.segmenter_training.model_copy(
                update={"seed": config.segmenter_training.seed + 1000 * fold.fold, **extra}
            )
            cfg = type(cfg).model_validate(cfg.model_dump())
            rec = Path(args.record or "/tmp/plateau/records") / f"{vname}_{arch}_{int(time.time())}.json"
            t0 = time.perf_counter()
            train_segmenter(
                model,
                [s.image for s in private],
                [s.labels for s in private],
                cfg,
                "cpu",
                progress=False,
                convergence_path=rec,
                description=f"fold {fold.fold} {arch} victim",
            )
            seconds = time.perf_counter() - t0
            record = json.loads(rec.read_text())
            preds = [predict(model, s.image, "cpu") for s in unseen]
            unseen_dice = mean_foreground_dice(preds, [s.labels for s in unseen], n_classes)
            prior = majority_label_map([private[i].labels for i in record["trained_on"]])
            unseen_prior = mean_foreground_dice([prior] * len(unseen), [s.labels for s in unseen], n_classes)
            print(
                json.dumps(
                    {
                        "variant": vname,
                        "arch": arch,
                        "set": args.set + [f"{k}={v}" for k, v in extra.items()],
                        "n_classes": n_classes,
                        "grid": list(prepared.shape),
                        "best_val_dice": round(record["best_score"] or float("nan"), 4),
                        "baseline": round(record["baseline_score"], 4),
                        "unseen_dice": round(unseen_dice, 4),
                        "unseen_baseline": round(unseen_prior, 4),
                        "n_validation": len(record["validated_on"]),
                        "n_unseen": len(unseen),
                        "steps": record["steps_run"],
                        "best_step": record["best_step"],
                        "stop": record["stop_reason"],
                        "segments": record.get("segments"),
                        "seconds": round(seconds, 1),
                        "s_per_step": round(seconds / max(1, record["steps_run"]), 3),
                        "curve": [(c["step"], round(c["score"], 3)) for c in record["curve"]],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
