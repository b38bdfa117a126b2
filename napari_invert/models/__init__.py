"""Victim segmentation networks (3D U-Net and 3D SegNet): build, train, save, load, predict.

Every segmenter exposes ``encode(x) -> EncoderFeatures`` and ``decode(features) ->
logits``; :mod:`napari_invert.attack` reads exactly what ``encode`` returns.
"""

from napari_invert.models.augment import augment_intensity
from napari_invert.models.base import EncoderFeatures, Segmenter, level_channels
from napari_invert.models.factory import (
    ARCHITECTURES,
    build_segmenter,
    load_segmenter,
    predict,
    predict_many,
    predict_proba,
    save_segmenter,
    segmenter_from_spec,
)
from napari_invert.models.segmenter_training import train_segmenter
from napari_invert.models.segnet import SegNet3D
from napari_invert.models.training import (
    Cancelled,
    IndexedDiceCELoss,
    batch_indices,
    read_training_state,
    run_training_loop,
    segmentation_loss,
    write_curve,
)
from napari_invert.models.unet import UNet3D

__all__ = [
    "ARCHITECTURES",
    "Cancelled",
    "EncoderFeatures",
    "IndexedDiceCELoss",
    "SegNet3D",
    "Segmenter",
    "UNet3D",
    "augment_intensity",
    "batch_indices",
    "build_segmenter",
    "level_channels",
    "load_segmenter",
    "predict",
    "predict_many",
    "predict_proba",
    "read_training_state",
    "run_training_loop",
    "save_segmenter",
    "segmentation_loss",
    "segmenter_from_spec",
    "train_segmenter",
    "write_curve",
]
