"""The user's own segmenter: MONAI network, MONAI bundle, TorchScript, nnU-Net v2, entry point.

Every source is read without unpickling arbitrary objects and ends in one
:class:`ModelAdapter` (forward, channels, spatial multiple, layers, taps by name or role,
segmentation, the untrained control). See :mod:`napari_invert.audit_config` for the
``model:`` block and :mod:`.discovery` for how roles are found.
"""

from napari_invert.models.sources.adapter import (
    ModelAdapter,
    load_model_source,
    model_adapter_from_dict,
    tap_label,
)
from napari_invert.models.sources.discovery import LayerInfo, TapDiscovery, discover_module

__all__ = [
    "LayerInfo",
    "ModelAdapter",
    "TapDiscovery",
    "discover_module",
    "discover_taps",
    "load_model_source",
    "model_adapter_from_dict",
    "tap_label",
]


def discover_taps(adapter: ModelAdapter) -> TapDiscovery:
    """Layers and suggested roles of ``adapter``'s network (one dummy forward pass)."""
    return adapter.discovery
