"""Membership inference for one (variant, fold, architecture) of a study.

Threat model: **training-data leakage**. The attacker holds the victim's weights (and can
query it), knows its training recipe, and owns labelled subjects of its own (the attack
set). For each candidate scan with its labels it decides: was this a training subject?

Candidates are the fold's MEMBERS (the victim's private training subjects) and
NON-MEMBERS (held out: neither the victim nor the attacker trained on them). The truth is
used only to score the attacks (AUC, TPR at FPR), never by them.

:func:`run_membership_inference` trains (or loads) the shadows, scores the candidates
under the victim, the shadows and, as a control, the untrained victim architecture, runs
every configured attack and writes ``membership.json`` and ``membership_subjects.csv``
(:class:`~napari_invert.study.layout.StudyFolder` paths), atomically. A finished result is
returned as is when called again with the same inputs; different inputs are refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from napari_invert._io import read_json, write_json_atomic, write_text_atomic
from napari_invert.config import MembershipConfig, TrainConfig
from napari_invert.errors import DataError
from napari_invert.identify.intervals import auc_summary, difference_interval, fpr_support
from napari_invert.membership.attacks import LIRA_ATTACKS, ShadowSignals, run_attacks
from napari_invert.membership.shadows import ShadowFactory, TrainFn, train_shadows
from napari_invert.membership.signals import SIGNALS, SignalScores, SubjectLike, score_subjects
from napari_invert.models import segmenter_from_spec
from napari_invert.models.base import Segmenter
from napari_invert.study.layout import StudyFolder

#: ``untrained(seed) -> (control network | None, reason | None)``: the untrained-victim control
UntrainedFn = Callable[[int], tuple[Any, str | None]]

THREAT_MODEL = "training-data leakage"
QUESTION = "given the victim's weights and a candidate scan with its labels, was it a training subject?"
FORMAT_VERSION = 1


def _ids(subjects: Sequence[SubjectLike]) -> list[str]:
    return [str(s.subject_id) for s in subjects]


def _check_groups(members: list[str], nonmembers: list[str], attacker: list[str]) -> None:
    if not members or not nonmembers:
        raise ValueError("membership inference needs at least one member and one non-member")
    for a, b, what in (
        (members, nonmembers, "members and non-members"),
        (members, attacker, "members and the attacker's subjects"),
        (nonmembers, attacker, "non-members and the attacker's subjects"),
    ):
        both = sorted(set(a) & set(b))
        if both:
            raise ValueError(f"{what} overlap: {both}")


def _summaries(
    attacks: dict[str, dict[str, Any]], is_member: np.ndarray, config: MembershipConfig
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, res in attacks.items():
        score = np.asarray(res["score"], dtype=np.float64)
        summary = auc_summary(
            score[is_member],
            score[~is_member],
            fpr=config.fpr,
            n_boot=config.bootstrap,
            n_perm=config.permutations,
            seed=config.seed,
        ).to_dict()
        decision = res.get("decision")
        hard = None
        if decision is not None:
            d = np.asarray(decision, dtype=bool)
            hard = {
                "threshold": res["threshold"],
                "rule": res["threshold_rule"],
                "tpr": float(d[is_member].mean()),
                "fpr": float(d[~is_member].mean()),
                "accuracy": float(np.mean(d == is_member)),
            }
        out[name] = {
            "description": res["description"],
            "signal": res["signal"],
            **summary,
            "decision": hard,
            **({"calibration": res["calibration"]} if "calibration" in res else {}),
        }
    return out


def _score_shadows(shadows, candidates, attackers, device) -> ShadowSignals:
    return ShadowSignals(
        candidates=[score_subjects(s.model, candidates, device) for s in shadows],
        attack=[score_subjects(s.model, attackers, device) for s in shadows],
        in_mask=np.stack([s.in_mask for s in shadows]) if shadows else np.zeros((0, len(attackers)), bool),
    )


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


def untrained_like(victim: Segmenter, seed: int) -> Segmenter:
    """The victim's architecture at a fresh, seeded initialisation (eval mode, CPU)."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = segmenter_from_spec(victim.spec(), "victim spec")
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the model's tensors (names, shapes and bytes, in state-dict order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


def membership_inputs(
    config: MembershipConfig,
    train_config: TrainConfig,
    victim: Segmenter | Any,
    members: list[str],
    nonmembers: list[str],
    attacker: list[str],
    victim_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a result depends on (compared when a result is found on disk), JSON-ready.
    ``victim_spec``: the description of a victim that has no ``spec()`` (default
    ``victim.spec()``); such a victim's fingerprint is of ``victim.module`` when it wraps one
    (e.g. the audit's ModelAdapter)."""
    doc = {
        "members": members,
        "nonmembers": nonmembers,
        "attacker_subjects": attacker,
        "membership_config": config.model_dump(mode="json"),
        "train_config": train_config.model_dump(mode="json"),
        "victim": victim.spec() if victim_spec is None else victim_spec,
        "victim_weights_sha256": weights_fingerprint(
            victim if victim_spec is None else getattr(victim, "module", victim)
        ),
    }
    return json.loads(json.dumps(doc, default=str))  # as it reads back from membership.json


def run_membership_inference(
    folder: StudyFolder,
    config: MembershipConfig,
    *,
    variant: str,
    fold: int,
    arch: str,
    victim: Segmenter,
    members: Sequence[SubjectLike],
    nonmembers: Sequence[SubjectLike],
    attacker_subjects: Sequence[SubjectLike],
    train_config: TrainConfig,
    device: str | torch.device = "cpu",
    progress: bool = False,
    train_fn: TrainFn | None = None,
    on_step: Callable[[int, int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    victim_spec: dict[str, Any] | None = None,
    shadow_factory: ShadowFactory | None = None,
    untrained: UntrainedFn | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Membership inference against ``victim`` for one fold; returns ``membership.json``'s content.

    Parameters
    ----------
    folder
        The study folder (paths: ``membership_json``, ``membership_csv``, ``shadow_stem``).
    config
        Attacks, number of shadows, FPR, resamples, seed.
    victim
        The trained victim segmenter (its spec gives the shadows' architecture).
    members, nonmembers
        Candidates: the victim's training subjects and held-out subjects (``subject_id``,
        ``image``, ``labels``; e.g. ``PreparedSubject``).
    attacker_subjects
        The attacker's own labelled subjects; shadows train on halves of them.
    train_config
        The victim's training configuration (a white-box attacker knows it); shadows use it
        with their own seeds.
    train_fn, on_step, should_stop
        Passed to :func:`~napari_invert.membership.shadows.train_shadows`
        (``on_step(shadow, step, total, loss)``).
    victim_spec, shadow_factory, untrained, extra
        For a victim that is not one of this project's segmenters (an audit of the user's
        own network): its JSON description (default ``victim.spec()``), how its shadows are
        built (default: from ``victim.spec()``), ``untrained(seed) -> (control | None,
        reason | None)`` for the untrained-victim control (default :func:`untrained_like`)
        and keys added to the written document.
    """
    mem_ids, non_ids, att_ids = _ids(members), _ids(nonmembers), _ids(attacker_subjects)
    _check_groups(mem_ids, non_ids, att_ids)
    inputs = membership_inputs(config, train_config, victim, mem_ids, non_ids, att_ids, victim_spec)
    json_path = folder.membership_json(variant, fold, arch)
    if json_path.is_file():
        done = read_json(json_path)
        stored = dict(done.get("inputs") or {})
        expected = dict(inputs)
        if "victim_weights_sha256" not in stored:  # written before results recorded the weights
            expected.pop("victim_weights_sha256")
        if stored == expected and done.get("complete"):
            return done
        raise DataError(
            json_path,
            "membership result made with other subjects or settings; delete its folder to recompute",
        )

    candidates = list(members) + list(nonmembers)
    is_member = np.array([True] * len(members) + [False] * len(nonmembers))
    seed = config.seed + 1000 * fold
    needs_shadows = config.n_shadows > 0
    shadows = []
    if needs_shadows:
        if len(attacker_subjects) < 2:
            raise ValueError("shadow training needs at least 2 attacker subjects")
        shadows = train_shadows(
            victim,
            attacker_subjects,
            train_config,
            config.n_shadows,
            stems=[folder.shadow_stem(variant, fold, arch, k) for k in range(config.n_shadows)],
            curve_paths=[folder.shadow_curve(variant, fold, arch, k) for k in range(config.n_shadows)],
            seed=seed,
            device=device,
            train_fn=train_fn,
            progress=progress,
            on_step=on_step,
            should_stop=should_stop,
            factory=shadow_factory,
        )
    shadow_signals = _score_shadows(shadows, candidates, attacker_subjects, device) if shadows else None
    victim_signals = score_subjects(victim, candidates, device)
    attacks = run_attacks(
        victim_signals, list(config.attacks), shadow_signals, config.lira_signal, config.fpr
    )
    results = _summaries(attacks, is_member, config)

    controls: dict[str, Any] = {}
    control_attacks: dict[str, Any] = {}
    control_signals: SignalScores | None = None
    control = None
    if config.untrained_control:
        if untrained is None:
            control, reason = untrained_like(victim, seed + 999), None
        else:
            control, reason = untrained(seed + 999)
        if control is None:
            controls["untrained_victim"] = {"description": f"unavailable: {reason}", "attacks": {}}
    if control is not None:
        control_signals = score_subjects(control, candidates, device)
        control_attacks = run_attacks(
            control_signals, list(config.attacks), shadow_signals, config.lira_signal, config.fpr
        )
        controls["untrained_victim"] = {
            "description": "the victim's architecture at initialisation, attacked the same way "
            "(same shadows); membership cannot be inferred from it, expected AUC 0.5. Its scores "
            "lie far outside the shadows' distribution, so its LiRA AUC only reflects how hard "
            "the shadows find each candidate (exchangeable between members and non-members): "
            "deviations from 0.5 there are sampling noise",
            "attacks": {
                name: {k: v for k, v in res.items() if k in ("auc", "auc_ci", "auc_p_value", "tpr_at_fpr")}
                for name, res in _summaries(control_attacks, is_member, config).items()
            },
        }

    signal_differences = {
        name: {
            "lower_is_member": name == "loss",
            "member_mean": float(victim_signals.signal(name)[is_member].mean()),
            "nonmember_mean": float(victim_signals.signal(name)[~is_member].mean()),
            "members_minus_nonmembers": difference_interval(
                victim_signals.signal(name)[is_member],
                victim_signals.signal(name)[~is_member],
                n_boot=config.bootstrap,
                n_perm=config.permutations,
                seed=config.seed,
            ).to_dict(),
        }
        for name in SIGNALS
    }

    rows: list[dict[str, Any]] = []
    for i, sid in enumerate(victim_signals.subject_ids):
        row: dict[str, Any] = {
            "fold": fold,
            "subject_id": sid,
            "member": bool(is_member[i]),
            **{name: float(victim_signals.signal(name)[i]) for name in SIGNALS},
            "scores": {name: float(res["score"][i]) for name, res in attacks.items()},
            "decisions": {
                name: (None if res["decision"] is None else bool(res["decision"][i]))
                for name, res in attacks.items()
            },
        }
        if shadow_signals is not None:
            row["shadow_" + config.lira_signal] = [
                float(s.signal(config.lira_signal)[i]) for s in shadow_signals.candidates
            ]
        if control_signals is not None:
            row["untrained_scores"] = {name: float(res["score"][i]) for name, res in control_attacks.items()}
        rows.append(row)

    support = fpr_support(int(is_member.sum()), int((~is_member).sum()), config.fpr)
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "threat_model": THREAT_MODEL,
        "question": QUESTION,
        "variant": variant,
        "fold": fold,
        "arch": arch,
        "n_members": len(mem_ids),
        "n_nonmembers": len(non_ids),
        "n_attacker_subjects": len(att_ids),
        "n_shadows": len(shadows),
        "support": support,
        "attacks": results,
        "controls": controls,
        "signals": signal_differences,
        "subjects": rows,
        "shadows": [
            {"index": s.index, "stem": str(s.stem) if s.stem else None, "trained_on": s.trained_on}
            for s in shadows
        ],
        "inputs": inputs,
        "complete": True,
        **(extra or {}),
    }
    if any(a in LIRA_ATTACKS for a in config.attacks) and shadow_signals is not None:
        doc["shadow_attacker_scores"] = {
            "signal": config.lira_signal,
            "subject_ids": att_ids,
            "values": [s.signal(config.lira_signal).tolist() for s in shadow_signals.attack],
            "in_mask": shadow_signals.in_mask.tolist(),
        }
    columns = ["fold", "subject_id", "member", *SIGNALS]
    flat = []
    for row in rows:
        f = {k: row[k] for k in columns}
        f["member"] = int(row["member"])
        for name in attacks:
            f[f"{name}_score"] = row["scores"][name]
            d = row["decisions"][name]
            f[f"{name}_decision"] = "" if d is None else int(d)
            if control_signals is not None:
                f[f"untrained_{name}_score"] = row["untrained_scores"][name]
        flat.append(f)
    columns += [c for c in flat[0] if c not in columns]
    write_text_atomic(folder.membership_csv(variant, fold, arch), _csv(flat, columns))
    write_json_atomic(json_path, doc)
    return doc
