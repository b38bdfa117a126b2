"""One defended victim = one defence at one strength (a point of the frontier).

:func:`expand_defences` turns the study's ``defences:`` list into :class:`DefenceSpec`
items; :data:`REFERENCE` is the undefended victim, trained and attacked by exactly the same
code so that every point is compared with a reference measured the same way.

Threat models (see the README): ``dp_sgd`` acts on *training-data leakage* (what the
weights reveal about a training subject); ``expose_less``, ``noise``, ``quantise``,
``nopeek`` and ``adversarial`` act on *feature inversion* (what the exposed activations of
a scan reveal). Every point is nevertheless measured against both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_invert.errors import ConfigError

#: what each defence kind acts on, and what its strength means
KINDS: dict[str, dict[str, str]] = {
    "none": {"threat": "-", "strength": "-", "label": "undefended"},
    "expose_less": {
        "threat": "feature inversion",
        "strength": "levels without skips/indices",
        "label": "expose less",
    },
    "noise": {"threat": "feature inversion", "strength": "sigma / feature SD", "label": "feature noise"},
    "quantise": {"threat": "feature inversion", "strength": "bits", "label": "quantisation"},
    "nopeek": {"threat": "feature inversion", "strength": "dCor weight", "label": "NoPeek (dCor)"},
    "adversarial": {
        "threat": "feature inversion",
        "strength": "adversary weight",
        "label": "adversarial training",
    },
    "dp_sgd": {
        "threat": "training-data leakage",
        "strength": "noise multiplier",
        "label": "DP-SGD",
    },
}


@dataclass(frozen=True)
class DefenceSpec:
    """One defence at one strength.

    ``params`` holds the entry's other settings (``train``, ``positions``, ``delta``, ...);
    ``architectures`` the victims it applies to (``None``: all).
    """

    kind: str
    strength: float
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    architectures: tuple[str, ...] | None = None

    @property
    def slug(self) -> str:
        """Folder-safe name: ``none``, ``noise-0.5``, ``expose_less-1``, ``dp_sgd-1.1``."""
        return "none" if self.kind == "none" else f"{self.kind}-{self.strength:g}"

    @property
    def label(self) -> str:
        """Human-readable, e.g. ``feature noise (sigma / feature SD = 0.5)``."""
        info = KINDS[self.kind]
        if self.kind == "none":
            return info["label"]
        return f"{info['label']} ({info['strength']} = {self.strength:g})"

    @property
    def threat(self) -> str:
        return KINDS[self.kind]["threat"]

    def applies_to(self, arch: str) -> bool:
        return self.architectures is None or arch in self.architectures

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "strength": self.strength,
            "slug": self.slug,
            "label": self.label,
            "threat_model": self.threat,
            "params": dict(self.params),
        }


REFERENCE = DefenceSpec("none", 0.0)


def expand_defences(defences: list[Any]) -> list[DefenceSpec]:
    """``[DefenceConfig, ...]`` -> one :class:`DefenceSpec` per (entry, strength), in order.

    Raises :class:`ConfigError` when two entries give the same defence and strength (they
    would share one folder).
    """
    out: list[DefenceSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(defences):
        data = entry.model_dump() if hasattr(entry, "model_dump") else dict(entry)
        kind = data.pop("kind")
        strengths = data.pop("strengths")
        archs = data.pop("architectures", None)
        for s in strengths:
            spec = DefenceSpec(kind, float(s), data, None if archs is None else tuple(archs))
            if spec.slug in seen:
                raise ConfigError(
                    f"defences[{i}]: {spec.slug} is also given by defences[{seen[spec.slug]}] "
                    "(each defence and strength once)"
                )
            seen[spec.slug] = i
            out.append(spec)
    return out
