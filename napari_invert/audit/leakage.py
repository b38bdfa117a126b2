"""The audit's built-in membership inference (threat model **training-data leakage**).

When the audit config says who trained the user's model (``subjects.trained_on``) and
names held-out non-members (``subjects.holdout``), the audit asks: given the weights and a
candidate scan with its labels, was it a training subject? Candidates: the members
(``trained_on`` subjects among the reconstructed targets) and the non-members
(``holdout``); the truth only scores the attacks, never drives them.

It is the study's :func:`~napari_invert.membership.run_membership_inference` on the user's
model: the threshold attacks (``loss_threshold``, ``dice_threshold``,
``confidence_threshold``) always; with ``membership.lira: true`` also the likelihood-ratio
attacks (``lira_offline``, ``lira_global``) against shadow copies of the user's
architecture trained with ``membership.shadow_train`` on halves of the attacker's subjects
(:mod:`.shadows`; not possible for TorchScript, which keeps the threshold attacks and says
why). The control is the same architecture at its initialisation (``user@untrained``,
the inversion's control), scored the same way (expected AUC 0.5).

The result is written in the format of
:func:`~napari_invert.membership.run_membership_inference` at
``StudyFolder.membership_json(variant, 0, "user")`` (+ ``membership_subjects.csv``), so
``napari-invert evaluate`` pools it and prints the ``[training-data leakage]`` verdict
unchanged. A finished result is reused on a rerun with the same inputs.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from napari_invert.config import MembershipConfig
from napari_invert.membership.study import THREAT_MODEL, run_membership_inference

log = logging.getLogger(__name__)

LIRA_OFF = "not run: membership.lira is false (set it to train shadow models of your architecture)"
ARCH = "user"
FOLD = 0
SHADOW_DIR = "shadows"


def lira_plan(config: Any, adapter: Any) -> tuple[bool, str]:
    """``(run LiRA?, note)``: whether shadows of the user's architecture are trained, and why
    (not)."""
    from napari_invert.audit.shadows import shadow_support

    if not config.membership.lira:
        return False, LIRA_OFF
    why = shadow_support(adapter)
    if why:
        return False, why + "; threshold attacks only"
    m = config.membership
    return True, (
        f"{m.n_shadows} shadow copies of the user's architecture trained with membership.shadow_train "
        f"({m.shadow_train.steps} steps) on halves of the attacker's subjects"
    )


def membership_config(config: Any, lira: bool = False) -> MembershipConfig:
    """The study-format :class:`MembershipConfig` of an audit's ``membership:`` block
    (threshold attacks, plus ``lira_offline`` / ``lira_global`` with shadows when ``lira``;
    untrained control on)."""
    m = config.membership
    return MembershipConfig(
        enabled=m.enabled,
        n_shadows=m.n_shadows if lira else 0,
        attacks=list(m.attacks) + (["lira_offline", "lira_global"] if lira else []),
        lira_signal=m.lira_signal,
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


def summarise(doc: dict[str, Any]) -> dict[str, Any]:
    """The short form stored under ``membership`` in ``audit.json``, with a verdict line."""
    keep = ("auc", "auc_ci", "auc_p_value", "tpr_at_fpr")
    attacks = {n: {k: r[k] for k in keep} for n, r in doc["attacks"].items()}
    control = {
        n: r["auc"] for n, r in doc.get("controls", {}).get("untrained_victim", {}).get("attacks", {}).items()
    }
    name, best = max(attacks.items(), key=lambda kv: kv[1]["auc"])
    lo, hi = best["auc_ci"]
    lira = doc.get("lira", LIRA_OFF)
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
        + (
            f" Likelihood-ratio attack (LiRA): {lira}."
            if doc.get("n_shadows")
            else f" Threshold attacks only; likelihood-ratio attack (LiRA) {lira}."
        )
    )
    return {
        "status": "done",
        "result": "membership.json (study format; pooled by napari-invert evaluate)",
        "attacks": attacks,
        "untrained_control_auc": control,
        "n_shadows": doc.get("n_shadows", 0),
        "lira": lira,
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
    device: Any = "cpu",
    progress: bool = False,
    on_step: Any = None,
    should_stop: Any = None,
) -> dict[str, Any]:
    """Membership attacks on the user's model; writes ``membership.json``.

    ``adapter``: the user's :class:`~napari_invert.models.sources.ModelAdapter`;
    ``members`` / ``non_members`` / ``attacker``: prepared subjects (image, labels);
    ``control``: the untrained control adapter (default: ``adapter.untrained(seed)``);
    ``on_step(shadow, step, total, loss)`` / ``should_stop()``: shadow training.
    Returns :func:`summarise` of the result, or ``{"status": "not run: <why>"}``.
    """
    from napari_invert.audit.shadows import UserShadows

    if not config.membership.enabled:
        return {"status": "not run: membership.enabled is false"}
    why = _why_not(adapter, list(members) + list(non_members))
    if why:
        log.warning(why)
        return {"status": why}
    lira, note = lira_plan(config, adapter)
    if config.membership.lira and not lira:
        log.warning("likelihood-ratio attack (LiRA) %s", note)
    if lira and len(attacker) < 2:
        lira, note = False, "not run: shadow training needs at least 2 attacker subjects"
    cfg = membership_config(config, lira)

    def untrained(_seed: int) -> tuple[Any, str | None]:
        if control is not None:
            return control, None
        return adapter.untrained(config.controls.seed)

    def train_fn(model, images, labels, train_config, dev, **kwargs):
        from napari_invert.models import train_segmenter

        return train_segmenter(
            model, images, labels, train_config, dev, description="shadow of user model", **kwargs
        )

    doc = run_membership_inference(
        folder,
        cfg,
        variant=config.variant,
        fold=FOLD,
        arch=ARCH,
        victim=adapter,
        members=members,
        nonmembers=non_members,
        attacker_subjects=attacker,
        train_config=config.membership.shadow_train,
        device=device,
        progress=progress,
        train_fn=train_fn,
        on_step=on_step,
        should_stop=should_stop,
        victim_spec=adapter.description,
        shadow_factory=UserShadows(adapter) if lira else None,
        untrained=untrained,
        extra={"source": "napari-invert audit (the user's own model)", "lira": note},
    )
    return summarise(doc)
