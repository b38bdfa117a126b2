"""Which victims a run covers: the folds, preprocessing variants and architectures chosen
on the command line (``--folds`` / ``--variants`` / ``--architectures``) or all of the config's.

One place for the choice, so the executor's units, the membership shadows and the
defended experiments select the same victims from the same arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from napari_invert.config import StudyConfig

__all__ = ["VictimSelection", "select_victims"]


@dataclass(frozen=True)
class VictimSelection:
    """Chosen folds (ascending, no repeats), variants and architectures (given order)."""

    folds: list[int]
    variants: list[str]
    architectures: list[str]


def select_victims(
    config: StudyConfig,
    folds: Iterable[int] | None = None,
    variants: Iterable[str] | None = None,
    architectures: Iterable[str] | None = None,
) -> VictimSelection:
    """The folds, variants and architectures to run; ``None`` means all of ``config``'s.

    Folds are ``0 .. config.folds - 1`` by default (sorted and de-duplicated when given);
    variants and architectures keep the order given (default: the config's order).
    Values are not checked here (the study runner refuses unknown ones).
    """
    return VictimSelection(
        folds=sorted(set(folds)) if folds is not None else list(range(config.folds)),
        variants=list(variants) if variants is not None else list(config.preprocess.variants),
        architectures=(
            list(architectures) if architectures is not None else list(config.segmenter.architectures)
        ),
    )
