"""The white-box inversion attack: what the attacker reads (taps), its inversion decoder,
the decoder's training on the attacker's own images, and reconstruction of private ones."""

from napari_invert.attack.decoder import (
    InversionDecoder,
    TapInput,
    build_ladder,
    load_decoder,
    save_decoder,
)
from napari_invert.attack.taps import HookTapper, SegmenterTapper, Tapper, freeze, make_tapper
from napari_invert.attack.training import (
    compute_taps,
    reconstruct,
    reconstruction_loss,
    train_inversion_decoder,
)
from napari_invert.models.training import Cancelled

__all__ = [
    "Cancelled",
    "HookTapper",
    "InversionDecoder",
    "SegmenterTapper",
    "TapInput",
    "Tapper",
    "build_ladder",
    "compute_taps",
    "freeze",
    "load_decoder",
    "make_tapper",
    "reconstruct",
    "reconstruction_loss",
    "save_decoder",
    "train_inversion_decoder",
]
