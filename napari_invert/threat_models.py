"""The two threat models every number of napari-invert answers, and their controls.

napari-invert measures two *different* privacy threats. Mixing them up leads to the wrong
conclusion and the wrong defence, so every table, figure, CLI line and verdict names one.

* **Feature inversion** (:data:`FEATURE_INVERSION`) — the paper's attack. The attacker reads
  what the victim's encoder outputs for a patient's scan (split learning, shared embeddings,
  logged activations: the paper's assumption 1, "the attacker can access the latent space
  representation of arbitrary input images") and inverts it with a decoder trained on its own
  scans. It needs the *scan's activations*, not the training set: it works on scans the network
  never saw and on an untrained network. Its controls: the **untrained victim** (same
  architecture at initialisation, attacked the same way) and **members versus non-members**
  (held-out subjects reconstructed exactly like the training subjects). Defences act on what
  is exposed (expose less, noise, quantisation, decorrelation).
* **Training-data leakage** (:data:`TRAINING_DATA_LEAKAGE`) — what the trained *weights* reveal
  about the patients used to train them, measured by membership inference (given the weights
  and a candidate scan with labels: was it a training subject?). Its control: non-members,
  and AUC 0.5 for chance. DP-SGD bounds this threat, and does nothing against feature inversion.
"""

from __future__ import annotations

from dataclasses import dataclass

FEATURE_INVERSION = "feature inversion"
TRAINING_DATA_LEAKAGE = "training-data leakage"
THREAT_MODELS = (FEATURE_INVERSION, TRAINING_DATA_LEAKAGE)

#: Architecture-directory suffix of the untrained-victim control (``unet@untrained``).
UNTRAINED = "untrained"
#: How the untrained-victim control is named wherever a person reads it.
CONTROL_LABEL = "untrained victim (control)"
#: Display names of the built-in architectures (any other name is shown as written).
ARCH_NAMES: dict[str, str] = {"unet": "U-Net", "segnet": "SegNet"}

#: One-line descriptions, for the CLI, the report and the plugin.
DESCRIPTIONS: dict[str, str] = {
    FEATURE_INVERSION: (
        "the attacker reads the encoder's outputs for a patient's scan and reconstructs the scan; "
        "independent of whether that patient trained the network (controls: untrained victim, "
        "non-members)"
    ),
    TRAINING_DATA_LEAKAGE: (
        "the attacker holds the trained weights and asks whether a patient was in the training set "
        "(membership inference; control: non-members, chance AUC 0.5)"
    ),
}


@dataclass(frozen=True)
class ArchKey:
    """An architecture directory name split into the network and its condition.

    ``unet`` -> ``ArchKey("unet", None)``: the trained victim.
    ``unet@untrained`` -> ``ArchKey("unet", "untrained")``: the untrained-victim control.
    Other conditions (``unet@noise-0.5``) name defended victims.
    """

    arch: str
    condition: str | None = None

    @classmethod
    def parse(cls, name: str) -> ArchKey:
        arch, _, condition = name.partition("@")
        return cls(arch, condition or None)

    @property
    def name(self) -> str:
        return self.arch if self.condition is None else f"{self.arch}@{self.condition}"

    @property
    def is_control(self) -> bool:
        return self.condition == UNTRAINED

    @property
    def title(self) -> str:
        """The name a person reads: ``U-Net`` (trained victim), ``SegNet — untrained victim
        (control)``, ``U-Net — noise-0.5 victim`` (a defended victim); never ``x@y``."""
        name = ARCH_NAMES.get(self.arch, self.arch)
        if self.condition is None:
            return name
        if self.is_control:
            return f"{name} — {CONTROL_LABEL}"
        return f"{name} — {self.condition} victim"


def arch_title(name: str) -> str:
    """:attr:`ArchKey.title` of an architecture directory name (``segnet@untrained`` ->
    ``SegNet — untrained victim (control)``)."""
    return ArchKey.parse(name).title


def arch_key(arch: str, condition: str | None = None) -> str:
    """Directory name of an architecture under a condition (``arch_key("unet", "untrained")``)."""
    return ArchKey(arch, condition).name


def describe(threat: str) -> str:
    """``"feature inversion: the attacker reads ..."`` for a threat model name."""
    if threat not in DESCRIPTIONS:
        raise ValueError(f"unknown threat model {threat!r}; choose from {THREAT_MODELS}")
    return f"{threat}: {DESCRIPTIONS[threat]}"
