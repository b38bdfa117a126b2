"""Pool the per-fold membership results of one architecture.

With 10 members and 10 non-members per fold an AUC below ~0.72 cannot be told from chance
(one-sided 5 % test) and the lowest non-zero FPR is 0.1. Pooling the candidates of all
folds (e.g. 4 x 20 = 80 rows) narrows the interval and supports a lower FPR. The pooled
AUC ranks scores from different folds' victims on one scale (LiRA scores are normalised
per fold by their shadows; raw losses are not), so the per-fold AUCs are listed beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from napari_invert._io import read_json, write_json_atomic
from napari_invert.identify.intervals import auc_summary
from napari_invert.membership.study import THREAT_MODEL
from napari_invert.study.layout import StudyFolder


def load_membership_results(
    folder: StudyFolder, variant: str, arch: str, folds: Iterable[int] | None = None
) -> list[dict[str, Any]]:
    """The ``membership.json`` documents of ``folds`` (default: every fold that has one)."""
    if folds is None:
        folds = []
        k = 0
        while folder.fold_dir(variant, k).is_dir():
            folds.append(k)
            k += 1
    out = []
    for fold in folds:
        path = folder.membership_json(variant, fold, arch)
        if path.is_file():
            out.append(read_json(path))
    return out


def pool_membership(
    results: Sequence[dict[str, Any]],
    fpr: float | None = None,
    n_boot: int | None = None,
    n_perm: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Pooled AUC (+ interval, p-value, TPR at FPR, ROC) per attack over all folds' candidates.

    ``results``: ``membership.json`` documents of one variant and architecture. ``fpr``,
    ``n_boot``, ``n_perm``, ``seed`` default to the first result's membership config.
    Returns ``{"threat_model", "variant", "arch", "folds", "n_members", "n_nonmembers",
    "support", "attacks": {name: {...auc_summary, "per_fold": [...]}}, "controls": {...}}``.
    """
    if not results:
        raise ValueError("no membership results to pool")
    arch = {r["arch"] for r in results}
    variant = {r["variant"] for r in results}
    if len(arch) != 1 or len(variant) != 1:
        raise ValueError(
            f"pool one variant and architecture at a time, got {sorted(variant)} x {sorted(arch)}"
        )
    cfg = results[0]["inputs"]["membership_config"]
    fpr = cfg["fpr"] if fpr is None else fpr
    n_boot = cfg["bootstrap"] if n_boot is None else n_boot
    n_perm = cfg["permutations"] if n_perm is None else n_perm
    seed = cfg["seed"] if seed is None else seed

    rows = [row for r in results for row in r["subjects"]]
    is_member = np.array([bool(row["member"]) for row in rows])
    names = [n for n in results[0]["attacks"] if all(n in r["attacks"] for r in results)]

    def pooled(key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            if not all(name in row.get(key, {}) for row in rows):
                continue
            score = np.array([row[key][name] for row in rows], dtype=np.float64)
            out[name] = auc_summary(
                score[is_member], score[~is_member], fpr=fpr, n_boot=n_boot, n_perm=n_perm, seed=seed
            ).to_dict()
        return out

    attacks = pooled("scores")
    for name in attacks:
        attacks[name]["description"] = results[0]["attacks"][name]["description"]
        attacks[name]["per_fold"] = [
            {
                "fold": r["fold"],
                "auc": r["attacks"][name]["auc"],
                "auc_ci": r["attacks"][name]["auc_ci"],
                "tpr_at_fpr": r["attacks"][name]["tpr_at_fpr"],
            }
            for r in results
        ]
        attacks[name]["mean_fold_auc"] = float(np.mean([r["attacks"][name]["auc"] for r in results]))
    controls = {}
    if all("untrained_scores" in row for row in rows):
        controls["untrained_victim"] = {
            "description": "the victim's architecture at initialisation, attacked the same way",
            "attacks": {
                name: {k: v for k, v in s.items() if k in ("auc", "auc_ci", "auc_p_value", "tpr_at_fpr")}
                for name, s in pooled("untrained_scores").items()
            },
        }
    first = next(iter(attacks.values()), None)
    return {
        "threat_model": THREAT_MODEL,
        "variant": variant.pop(),
        "arch": arch.pop(),
        "folds": [r["fold"] for r in results],
        "n_members": int(is_member.sum()),
        "n_nonmembers": int((~is_member).sum()),
        "n_shadows": [r["n_shadows"] for r in results],
        "support": first["support"] if first else None,
        "attacks": attacks,
        "controls": controls,
        "note": "pooled AUC ranks all folds' candidates on one scale; per-fold AUCs beside it",
    }


def write_pooled_membership(folder: StudyFolder, variant: str, arch: str) -> dict[str, Any] | None:
    """Pool every fold's result of ``variant``/``arch`` and write it to
    :meth:`StudyFolder.membership_pooled_json`; ``None`` when no fold has a result."""
    results = load_membership_results(folder, variant, arch)
    if not results:
        return None
    doc = pool_membership(results)
    write_json_atomic(folder.membership_pooled_json(variant, arch), doc)
    return doc
