"""k-fold private / held-out / attack splits.

The paper's protocol: 40 subjects, 4 folds; in each fold 10 subjects are the *private*
training set of the victim segmenter (the MEMBERS) and the other 30 are the attacker's own
data. Over the 4 folds every subject is private exactly once, so all 40 are reconstructed.

The members-versus-non-members control adds a *held-out* set per fold: subjects neither the
victim nor the attacker trains on (NON-members), reconstructed and scored exactly like the
private ones. Fold ``k``'s held-out set is taken from the subjects that follow fold ``k``'s
private set in the shuffled order (cyclically), so with ``holdout`` equal to the fold size
(LPBA40: 10 private / 10 held out / 20 attack) every subject is held out exactly once, in a
different fold from the one where it is private: each subject then has one member and one
non-member reconstruction, a paired comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    """One fold: who trains the victim (private = members), who is held out from both
    (holdout = non-members; empty when the control is off) and who trains the attacker."""

    fold: int
    private: tuple[str, ...]
    attack: tuple[str, ...]
    holdout: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        doc = {"fold": self.fold, "private": list(self.private), "attack": list(self.attack)}
        if self.holdout:
            doc["holdout"] = list(self.holdout)
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> Fold:
        """Inverse of :meth:`to_dict` (``splits.json`` entries)."""
        return cls(
            int(doc["fold"]),
            tuple(doc["private"]),
            tuple(doc["attack"]),
            tuple(doc.get("holdout", ())),
        )


def resolve_holdout(holdout: int | str, n_subjects: int, n_folds: int) -> int:
    """Number of held-out subjects per fold: ``"fold"`` = the smallest fold's size."""
    if holdout == "fold":
        return n_subjects // n_folds
    return int(holdout)


def make_splits(subject_ids: list[str], n_folds: int, seed: int, holdout: int = 0) -> list[Fold]:
    """Shuffle ``subject_ids`` with ``seed`` and deal them into ``n_folds`` private sets.

    Each subject is private in exactly one fold. With ``holdout > 0`` each fold also holds out
    the ``holdout`` subjects that follow its private set in the shuffled order (cyclically);
    the attack set of a fold is everyone else. Fold sizes differ by at most one when
    ``len(subject_ids)`` is not divisible.

    Raises
    ------
    ValueError
        If there are not enough subjects for every fold to have at least one private and one
        attack subject (``len(subject_ids) > n_folds``), or ids repeat.
    """
    ids = list(subject_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("subject ids are not unique")
    if n_folds < 2:
        raise ValueError("at least 2 folds are needed")
    if len(ids) <= n_folds:
        raise ValueError(f"{len(ids)} subjects are too few for {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    chunks = np.array_split(np.arange(len(ids)), n_folds)
    largest = max(len(c) for c in chunks)
    if holdout < 0 or len(ids) - largest - holdout < 1:
        raise ValueError(
            f"holdout {holdout}: {len(ids)} subjects leave no attack subject next to "
            f"{largest} private and {holdout} held out per fold"
        )
    folds = []
    for k, chunk in enumerate(chunks):
        private = tuple(sorted(shuffled[i] for i in chunk))
        end = int(chunk[-1]) + 1
        held = tuple(sorted(shuffled[(end + j) % len(ids)] for j in range(holdout)))
        attack = tuple(sorted(s for s in ids if s not in private and s not in held))
        folds.append(Fold(k, private, attack, held))
    return folds


def splits_document(folds: list[Fold], seed: int) -> dict:
    """The JSON document stored as ``splits.json`` (``holdout`` keys only when the control is on,
    so study folders made before it still compare equal)."""
    return {"seed": seed, "n_folds": len(folds), "folds": [f.to_dict() for f in folds]}
