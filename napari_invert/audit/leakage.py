"""The audit's built-in membership inference (threat model **training-data leakage**).

When the audit config says who trained the user's model (``subjects.trained_on``) and
names held-out non-members (``subjects.holdout``), the audit asks: given the weights and a
candidate scan with its labels, was it a training subject? Candidates: the members
(``trained_on`` subjects among the reconstructed targets) and the non-members
(``holdout``); the truth only scores the attacks, never drives them.

Only the threshold attacks run (``loss_threshold``, ``dice_threshold``,
``confidence_threshold``: the user's model's own fit to each candidate). The
likelihood-ratio attack (LiRA) needs shadow models trained like the victim, and the audit
has no training recipe for the user's model. The control is the same architecture at its
initialisation (``user@untrained``), scored the same way (expected AUC 0.5).

The result is written in the format of
:func:`~napari_invert.membership.run_membership_inference` at
``StudyFolder.membership_json(variant, 0, "user")`` (+ ``membership_subjects.csv``), so
``napari-invert evaluate`` pools it and prints the ``[training-data leakage]`` verdict
unchanged. A finished result is reused on a rerun with the same inputs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from napari_invert._io import read_json, write_json_atomic, write_text_atomic
from napari_invert.config import MembershipConfig
from napari_invert.errors import DataError
from napari_invert.identify.intervals import difference_interval, fpr_support
from napari_invert.membership.attacks import DESCRIPTIONS, run_attacks
from napari_invert.membership.signals import SIGNALS, score_subjects
from napari_invert.membership.study import (
    FORMAT_VERSION,
    QUESTION,
    THREAT_MODEL,
    _csv,
    _summaries,
    weights_fingerprint,
)

log = logging.getLogger(__name__)

LIRA_NOTE = "not available: the audit has no training recipe for the user's model"
ARCH = "user"
FOLD = 0


def membership_config(config: Any) -> MembershipConfig:
    """The study-format :class:`MembershipConfig` of an audit's ``membership:`` block
    (threshold attacks only, no shadows, untrained control on)."""
    m = config.membership
    return MembershipConfig(
        enabled=m.enabled,
        n_shadows=0,
        attacks=list(m.attacks),
        fpr=m.fpr,
        bootstrap=m.bootstrap,
        permutations=m.permutations,
        seed=m.seed,
        untrained_control=True,
    )


def _why_not(adapter: Any, subjects: list) -> str | None:
    """Why the candidates cannot be scored (missing / out-of-range labels), or ``None``."""
    missing = [s.subject_id for s in subjects if s.labels is None]
    if missing:
        return (
            "not run: membership inference needs the label map of every member and non-member "
            f"(missing for {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
            "give the cohort labels"
        )
    n = adapter.out_channels
    top = max(int(np.max(s.labels)) for s in subjects)
    if n is not None and top >= n:
        return (
            f"not run: the model outputs {n} channels but the labels reach class {top}; "
            "set cohort.label_mode to the classes the model was trained on"
        )
    return None


def _inputs(cfg: MembershipConfig, adapter: Any, mem: list, non: list, att: list) -> dict[str, Any]:
    try:
        sha = weights_fingerprint(adapter.module)
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - exotic modules
        sha = None
    doc = {
        "members": mem,
        "nonmembers": non,
        "attacker_subjects": att,
        "membership_config": cfg.model_dump(mode="json"),
        "train_config": None,
        "victim": adapter.description,
        "victim_weights_sha256": sha,
    }
    return json.loads(json.dumps(doc, default=str))  # as it reads back from membership.json


def summarise(doc: dict[str, Any]) -> dict[str, Any]:
    """The short form stored under ``membership`` in ``audit.json``, with a verdict line."""
    keep = ("auc", "auc_ci", "auc_p_value", "tpr_at_fpr")
    attacks = {n: {k: r[k] for k in keep} for n, r in doc["attacks"].items()}
    control = {
        n: r["auc"] for n, r in doc.get("controls", {}).get("untrained_victim", {}).get("attacks", {}).items()
    }
    name, best = max(attacks.items(), key=lambda kv: kv[1]["auc"])
    lo, hi = best["auc_ci"]
    verdict = (
        f"[{THREAT_MODEL}] membership inference AUC {best['auc']:.2f} [{lo:.2f}, {hi:.2f}] "
        f"({name}, p = {best['auc_p_value']:.2g}; {doc['n_members']} members vs "
        f"{doc['n_nonmembers']} held-out non-members; chance 0.5)"
        + (f"; untrained control {control[name]:.2f}" if name in control else "")
        + (
            ". The weights reveal who trained them."
            if lo > 0.5
            else ". No clear evidence the weights reveal who trained them."
        )
        + f" Threshold attacks only; likelihood-ratio attack (LiRA) {LIRA_NOTE}."
    )
    return {
        "status": "done",
        "result": "membership.json (study format; pooled by napari-invert evaluate)",
        "attacks": attacks,
        "untrained_control_auc": control,
        "lira": LIRA_NOTE,
        "verdict": verdict,
    }


def audit_membership(
    adapter: Any,
    members: list,
    non_members: list,
    attacker: list,
    folder: Any,
    config: Any,
    control: Any = None,
) -> dict[str, Any]:
    """Threshold membership attacks on the user's model; writes ``membership.json``.

    ``adapter``: the user's :class:`~napari_invert.models.sources.ModelAdapter`;
    ``members`` / ``non_members`` / ``attacker``: prepared subjects (image, labels);
    ``control``: the untrained control adapter (default: ``adapter.untrained(seed)``).
    Returns :func:`summarise` of the result, or ``{"status": "not run: <why>"}``.
    """
    cfg = membership_config(config)
    if not cfg.enabled:
        return {"status": "not run: membership.enabled is false"}
    why = _why_not(adapter, list(members) + list(non_members))
    if why:
        log.warning(why)
        return {"status": why}
    variant = config.variant
    mem_ids = [s.subject_id for s in members]
    non_ids = [s.subject_id for s in non_members]
    att_ids = [s.subject_id for s in attacker]
    inputs = _inputs(cfg, adapter, mem_ids, non_ids, att_ids)
    json_path = folder.membership_json(variant, FOLD, ARCH)
    if json_path.is_file():
        done = read_json(json_path)
        if done.get("inputs") == inputs and done.get("complete"):
            return summarise(done)
        raise DataError(
            json_path, "membership result made with other subjects, settings or weights; choose a new --out"
        )

    candidates = list(members) + list(non_members)
    is_member = np.array([True] * len(members) + [False] * len(non_members))
    signals = score_subjects(adapter, candidates)
    attacks = run_attacks(signals, list(cfg.attacks), None, cfg.lira_signal, cfg.fpr)
    results = _summaries(attacks, is_member, cfg)

    if control is None:
        control, reason = adapter.untrained(config.controls.seed)
    else:
        reason = None
    controls: dict[str, Any] = {}
    control_attacks: dict[str, Any] = {}
    if control is not None:
        control_signals = score_subjects(control, candidates)
        control_attacks = run_attacks(control_signals, list(cfg.attacks), None, cfg.lira_signal, cfg.fpr)
        controls["untrained_victim"] = {
            "description": "the user's architecture at its initialisation ('user@untrained'), attacked "
            "the same way; membership cannot be inferred from it, expected AUC 0.5",
            "attacks": {
                name: {k: v for k, v in res.items() if k in ("auc", "auc_ci", "auc_p_value", "tpr_at_fpr")}
                for name, res in _summaries(control_attacks, is_member, cfg).items()
            },
        }
    else:
        controls["untrained_victim"] = {"description": f"unavailable: {reason}", "attacks": {}}

    signal_differences = {
        name: {
            "lower_is_member": name == "loss",
            "member_mean": float(signals.signal(name)[is_member].mean()),
            "nonmember_mean": float(signals.signal(name)[~is_member].mean()),
            "members_minus_nonmembers": difference_interval(
                signals.signal(name)[is_member],
                signals.signal(name)[~is_member],
                n_boot=cfg.bootstrap,
                n_perm=cfg.permutations,
                seed=cfg.seed,
            ).to_dict(),
        }
        for name in SIGNALS
    }
    rows: list[dict[str, Any]] = []
    flat: list[dict[str, Any]] = []
    for i, sid in enumerate(signals.subject_ids):
        values = {name: float(signals.signal(name)[i]) for name in SIGNALS}
        row: dict[str, Any] = {
            "fold": FOLD,
            "subject_id": sid,
            "member": bool(is_member[i]),
            **values,
            "scores": {name: float(res["score"][i]) for name, res in attacks.items()},
            "decisions": {name: None for name in attacks},  # no shadows: no calibrated threshold
        }
        f: dict[str, Any] = {"fold": FOLD, "subject_id": sid, "member": int(is_member[i]), **values}
        for name in attacks:
            f[f"{name}_score"] = row["scores"][name]
        if control_attacks:
            row["untrained_scores"] = {name: float(res["score"][i]) for name, res in control_attacks.items()}
            for name in attacks:
                f[f"untrained_{name}_score"] = row["untrained_scores"][name]
        rows.append(row)
        flat.append(f)

    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "threat_model": THREAT_MODEL,
        "question": QUESTION,
        "variant": variant,
        "fold": FOLD,
        "arch": ARCH,
        "source": "napari-invert audit (the user's own model)",
        "n_members": len(mem_ids),
        "n_nonmembers": len(non_ids),
        "n_attacker_subjects": len(att_ids),
        "n_shadows": 0,
        "lira": LIRA_NOTE,
        "attack_descriptions": {n: DESCRIPTIONS[n] for n in attacks},
        "support": fpr_support(len(mem_ids), len(non_ids), cfg.fpr),
        "attacks": results,
        "controls": controls,
        "signals": signal_differences,
        "subjects": rows,
        "shadows": [],
        "inputs": inputs,
        "complete": True,
    }
    write_text_atomic(folder.membership_csv(variant, FOLD, ARCH), _csv(flat, list(flat[0])))
    write_json_atomic(json_path, doc)
    return summarise(doc)
