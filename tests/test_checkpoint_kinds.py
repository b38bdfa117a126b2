"""Loading a module checkpoint checks what it holds: a segmenter, an inversion decoder, or
the resumable training checkpoint of one (real files written here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_invert.attack.decoder import load_decoder
from napari_invert.checkpoint import save_checkpoint
from napari_invert.config import SegmenterConfig, TrainConfig
from napari_invert.errors import CheckpointError
from napari_invert.models import build_segmenter, load_segmenter, save_segmenter, train_segmenter

SMALL = SegmenterConfig(base_filters=4, levels=2, convs_per_level=1)
NOT_DECODER = r"not an inversion-decoder checkpoint \(kind='segmenter'\)"


def test_a_checkpoint_of_another_kind_is_refused_naming_the_file_and_kind(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_segmenter(tmp_path / "seg", build_segmenter("unet", SMALL, n_classes=2))
    with pytest.raises(CheckpointError, match=r"seg\.json: " + NOT_DECODER):
        load_decoder(tmp_path / "seg")
    save_checkpoint(tmp_path / "shadow", {"w": torch.zeros(2)}, {"kind": "user_shadow"})
    not_segmenter = r"shadow\.json: not a segmenter checkpoint \(kind='user_shadow'\)"
    with pytest.raises(CheckpointError, match=not_segmenter):
        load_segmenter(tmp_path / "shadow")


def test_a_training_checkpoint_loads_as_the_module_it_trains(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.random((16, 16, 16), dtype=np.float32) for _ in range(2)]
    labels = [(im > 0.5).astype(np.int64) for im in images]
    torch.manual_seed(0)
    model = build_segmenter("unet", SMALL, n_classes=2)
    config = TrainConfig(steps=1, batch_size=1, checkpoint_every=1, augment=False)
    train_segmenter(model, images, labels, config, "cpu", checkpoint_stem=tmp_path / "train", progress=False)
    loaded, meta = load_segmenter(tmp_path / "train")
    assert meta["kind"] == "training_state" and meta["step"] == 1
    expected = model.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(CheckpointError, match=r"train\.json: " + NOT_DECODER):
        load_decoder(tmp_path / "train")
