"""The attacker's view of a (defended) victim: every tensor its encoder exposes.

:class:`ExposedTapper` returns exactly what :meth:`Segmenter.encode` hands the victim's
decoder: the bottleneck, the skips that exist (a U-Net trained without its level-0..k-1
skips exposes none at those levels) and the pooling indices that exist. For a
:class:`~napari_invert.defences.DefendedSegmenter` these are the perturbed tensors, so
the attacker sees what a split-learning server would see.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from napari_invert.attack.taps import Tapper
from napari_invert.models.base import Segmenter


def exposed_names(model: Segmenter) -> list[str]:
    """Names of the exposed tensors in tapper order, e.g. ``bottleneck, skip1, skip2``."""
    drop = int(getattr(model, "drop_levels", 0))
    kept = range(drop, model.levels)
    if model.arch == "segnet":
        return ["bottleneck", *[f"indices{lvl}" for lvl in kept]]
    return ["bottleneck", *[f"skip{lvl}" for lvl in kept]]


class ExposedTapper(Tapper):
    """Tapper over everything ``model.encode`` returns (tap name ``exposed``)."""

    def __init__(self, model: Segmenter) -> None:
        super().__init__(model)
        self.arch = model.arch
        self.names = exposed_names(model)

    def _tap(self, x: Tensor) -> list[Tensor]:
        f = self.module.encode(x)
        return [f.bottleneck, *f.skips, *(f.indices or [])]

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "tap": "exposed", "arch": self.arch}
