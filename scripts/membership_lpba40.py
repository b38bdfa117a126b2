"""One fold of membership inference on LPBA40 (threat model: training-data leakage).

Until the study runner calls :func:`napari_invert.membership.run_membership_inference`
itself, this reproduces the numbers quoted for it: quick_cpu's segmenter and training
settings (optionally on a coarser grid), fold 0 of the 4-fold split, 10 members (the
victim's private subjects), 10 non-members (the first 10 attack subjects, held out from
everyone) and 20 attacker subjects (shadow training).

    NAPARI_INVERT_DATA=../shared/data python scripts/membership_lpba40.py \
        --arch unet --voxel-mm 8 --shadows 4 --out studies/membership_lpba40

Resumable: the victim and every shadow are saved in ``--out``; rerunning skips them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from napari_invert.config import MembershipConfig, load_config
from napari_invert.data.cohort import Cohort
from napari_invert.data.prepare import prepare_cohort
from napari_invert.membership import run_membership_inference
from napari_invert.models import build_segmenter, load_segmenter, save_segmenter, train_segmenter
from napari_invert.study.layout import StudyFolder
from napari_invert.study.splits import make_splits

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="unet", choices=["unet", "segnet"])
    parser.add_argument("--voxel-mm", type=float, default=8.0, help="quick_cpu uses 4 mm")
    parser.add_argument("--shadows", type=int, default=4)
    parser.add_argument("--config", type=Path, default=ROOT / "sample_configs" / "quick_cpu.yaml")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = load_config(args.config, overrides={"preprocess": {"voxel_mm": args.voxel_mm}})
    cohort = Cohort.from_path(cfg.cohort.path, kind=cfg.cohort.kind)
    prepared = prepare_cohort(
        cohort,
        cfg.preprocess,
        cfg.multiple_of,
        "skull_stripped",
        cfg.cohort.label_mode,
        cache_dir=args.out / "cache",
        progress=False,
    )
    by_id = {s.subject_id: s for s in prepared.subjects}
    fold = make_splits([s.subject_id for s in cohort.subjects], cfg.folds, cfg.split_seed)[0]
    members = [by_id[i] for i in fold.private]
    nonmembers = [by_id[i] for i in fold.attack[:10]]
    attacker = [by_id[i] for i in fold.attack[10:]]

    folder = StudyFolder(args.out)
    stem = folder.segmenter_stem("skull_stripped", 0, args.arch)
    if stem.with_suffix(".json").is_file():
        victim, _ = load_segmenter(stem)
    else:
        torch.manual_seed(0)
        victim = build_segmenter(args.arch, cfg.segmenter, prepared.label_table.n_classes)
        train_segmenter(
            victim,
            [s.image for s in members],
            [s.labels for s in members],
            cfg.segmenter_training,
            "cpu",
            checkpoint_stem=stem.with_name("segmenter_resume"),
        )
        save_segmenter(stem, victim, {"trained_on": list(fold.private)})

    config = MembershipConfig(
        n_shadows=args.shadows,
        attacks=["loss_threshold", "dice_threshold", "confidence_threshold", "lira_offline", "lira_global"],
    )
    doc = run_membership_inference(
        folder,
        config,
        variant="skull_stripped",
        fold=0,
        arch=args.arch,
        victim=victim,
        members=members,
        nonmembers=nonmembers,
        attacker_subjects=attacker,
        train_config=cfg.segmenter_training,
        progress=True,
    )
    control = doc["controls"].get("untrained_victim", {}).get("attacks", {})
    print(f"threat model: {doc['threat_model']}; {args.arch}, grid {prepared.shape}")
    for name, res in doc["attacks"].items():
        lo, hi = res["auc_ci"]
        c = control.get(name, {}).get("auc")
        print(
            f"{name:22s} AUC {res['auc']:.2f} [{lo:.2f}, {hi:.2f}] p={res['auc_p_value']:.4f} "
            f"TPR@FPR{res['fpr']:g}={res['tpr_at_fpr']:.2f}  untrained control AUC {c:.2f}"
        )
    print(doc["support"]["statement"])


if __name__ == "__main__":
    main()
