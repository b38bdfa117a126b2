"""Who trained the model, whom the attacker may use, who is reconstructed."""

from __future__ import annotations

from dataclasses import dataclass

from napari_invert.audit_config import AuditSubjects, read_subject_list
from napari_invert.errors import ConfigError


@dataclass(frozen=True)
class AuditRoles:
    """Subject IDs by role (cohort order).

    ``trained_on``: ``None`` when unknown. ``attack``: the attacker's own subjects (never
    in ``trained_on``). ``targets``: every other subject; their reconstructions are scored
    (the study's ``private`` list). ``members`` / ``non_members``: targets split by
    ``trained_on`` (``non_members`` empty when unknown).
    """

    trained_on: list[str] | None
    attack: list[str]
    holdout: list[str]
    targets: list[str]

    @property
    def members(self) -> list[str]:
        return [s for s in self.targets if self.trained_on is not None and s in self.trained_on]

    @property
    def non_members(self) -> list[str]:
        if self.trained_on is None:
            return []
        return [s for s in self.targets if s not in self.trained_on]

    def to_dict(self) -> dict:
        return {
            "trained_on": self.trained_on,
            "attack": self.attack,
            "holdout": self.holdout,
            "targets": self.targets,
            "members": self.members,
            "non_members": self.non_members,
        }


def _known(ids: list[str], all_ids: list[str], key: str) -> list[str]:
    unknown = [s for s in ids if s not in all_ids]
    if unknown:
        raise ConfigError(
            f"subjects.{key}: {len(unknown)} ID(s) not in the cohort ({', '.join(unknown[:5])}); "
            f"cohort IDs: {', '.join(all_ids[:8])}{', ...' if len(all_ids) > 8 else ''}"
        )
    return [s for s in all_ids if s in set(ids)]


def resolve_subjects(spec: AuditSubjects, all_ids: list[str]) -> AuditRoles:
    """Resolve the ``subjects:`` block against the cohort (ConfigError on any conflict,
    in particular an attack set that overlaps the training subjects)."""
    trained = read_subject_list(spec.trained_on, "trained_on")
    if trained == "rest":
        raise ConfigError("subjects.trained_on: give a list, a file or 'unknown' (not 'rest')")
    trained_on = None if trained == "unknown" else _known(trained, all_ids, "trained_on")  # type: ignore[arg-type]
    attack_raw = read_subject_list(spec.attack, "attack")
    holdout_raw = read_subject_list(spec.holdout, "holdout")
    if holdout_raw == "unknown" or attack_raw == "unknown":
        raise ConfigError("subjects: 'unknown' is only allowed for trained_on")
    if attack_raw == "rest" and holdout_raw == "rest":
        raise ConfigError("subjects: attack and holdout cannot both be 'rest'")
    if attack_raw == "rest":
        if trained_on is None:
            raise ConfigError(
                "subjects.attack: 'rest' needs trained_on; when the training subjects are unknown, list the "
                "attacker's subjects explicitly"
            )
        holdout = _known(holdout_raw, all_ids, "holdout")  # type: ignore[arg-type]
        attack = [s for s in all_ids if s not in trained_on and s not in holdout]
    else:
        attack = _known(attack_raw, all_ids, "attack")  # type: ignore[arg-type]
        if holdout_raw == "rest":
            holdout = [s for s in all_ids if s not in attack and (trained_on is None or s not in trained_on)]
        else:
            holdout = _known(holdout_raw, all_ids, "holdout")  # type: ignore[arg-type]
    if trained_on is not None:
        overlap = [s for s in attack if s in trained_on]
        if overlap:
            raise ConfigError(
                f"subjects: the attack set overlaps trained_on ({', '.join(overlap[:5])}"
                f"{', ...' if len(overlap) > 5 else ''}); "
                "the attacker may not use the model's training subjects"
            )
        both = [s for s in holdout if s in trained_on]
        if both:
            raise ConfigError(f"subjects: holdout subjects are also in trained_on ({', '.join(both[:5])})")
    clash = [s for s in holdout if s in attack]
    if clash:
        raise ConfigError(f"subjects: holdout overlaps the attack set ({', '.join(clash[:5])})")
    if len(attack) < 2:
        raise ConfigError(f"subjects.attack: the attacker needs at least 2 subjects, got {len(attack)}")
    targets = [s for s in all_ids if s not in attack]
    if not targets:
        raise ConfigError("subjects: no subject left to reconstruct (every subject is in the attack set)")
    return AuditRoles(trained_on, attack, holdout, targets)
