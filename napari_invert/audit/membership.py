"""The hook through which a membership-inference attack joins an audit.

The audit calls :func:`run_membership` once, after the inversion attacks, when the
training subjects are known and at least one non-member exists. By default it runs the
built-in attacks (:func:`napari_invert.audit.leakage.audit_membership`: threshold attacks,
and LiRA with shadow models when ``membership.lira`` is on), which
writes the study-format ``membership.json`` that ``napari-invert evaluate`` pools). Another
membership module may replace it with :func:`register_membership_attack`; the function it
registers gets

* ``adapter``: the user's network (:class:`~napari_invert.models.sources.ModelAdapter`:
  ``forward``, ``segment`` (sliding window when patch-trained), ``untrained()``);
* ``members`` / ``non_members``: :class:`~napari_invert.data.prepare.PreparedSubject`
  lists (image, mask, labels on the model grid): the targets in ``trained_on`` / the
  ``holdout`` subjects;
* ``attacker``: the attacker's own prepared subjects (e.g. for shadow models);
* ``folder``: the :class:`~napari_invert.study.layout.StudyFolder` to write into;
* ``config``: the :class:`~napari_invert.audit_config.AuditConfig`;

and returns a JSON-ready dict (stored under ``membership`` in ``audit.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MembershipAttack = Callable[..., dict[str, Any]]

_ATTACK: MembershipAttack | None = None


def register_membership_attack(fn: MembershipAttack | None) -> None:
    """Install a membership-inference attack in place of the built-in one (``None``:
    back to the built-in threshold attacks)."""
    global _ATTACK
    _ATTACK = fn


def run_membership(
    adapter, members, non_members, attacker, folder, config, control=None, **builtin: Any
) -> dict[str, Any]:
    """Run the registered (default: built-in) attack, or say why none ran
    (training-data-leakage threat). ``control`` (the untrained control adapter) and
    ``builtin`` (``device``, ``progress``, ``on_step``, ``should_stop`` for shadow
    training) are passed to the built-in attack only."""
    base = {
        "threat_model": "training-data leakage",
        "n_members": len(members),
        "n_non_members": len(non_members),
    }
    if not members or not non_members:
        return {**base, "status": "not run: needs members and non-members (trained_on known, holdout given)"}
    kwargs = dict(
        adapter=adapter,
        members=members,
        non_members=non_members,
        attacker=attacker,
        folder=folder,
        config=config,
    )
    if _ATTACK is None:
        from napari_invert.audit.leakage import audit_membership

        return {**base, **audit_membership(**kwargs, control=control, **builtin)}
    result = _ATTACK(**kwargs)
    return {**base, "status": "done", **(result or {})}
