"""k-fold private/attack splits.

The paper's protocol: 40 subjects, 4 folds; in each fold 10 subjects are the *private*
training set of the victim segmenter and the other 30 are the attacker's own data. Over
the 4 folds every subject is private exactly once, so all 40 are reconstructed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    """One fold: who trains the victim (private) and who trains the attacker (attack)."""

    fold: int
    private: tuple[str, ...]
    attack: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"fold": self.fold, "private": list(self.private), "attack": list(self.attack)}


def make_splits(subject_ids: list[str], n_folds: int, seed: int) -> list[Fold]:
    """Shuffle ``subject_ids`` with ``seed`` and deal them into ``n_folds`` private sets.

    Each subject is private in exactly one fold; the attack set of a fold is everyone else.
    Fold sizes differ by at most one when ``len(subject_ids)`` is not divisible.

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
    folds = []
    for k, chunk in enumerate(chunks):
        private = tuple(sorted(shuffled[i] for i in chunk))
        attack = tuple(sorted(s for s in ids if s not in private))
        folds.append(Fold(k, private, attack))
    return folds


def splits_document(folds: list[Fold], seed: int) -> dict:
    """The JSON document stored as ``splits.json``."""
    return {"seed": seed, "n_folds": len(folds), "folds": [f.to_dict() for f in folds]}
