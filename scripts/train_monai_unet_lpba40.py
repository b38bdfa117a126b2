"""Train a stock MONAI UNet on LPBA40 at 4 mm, the way a MONAI user would, and save its
state dict: the model that ``sample_configs/own_model_monai.yaml`` audits.

    python scripts/train_monai_unet_lpba40.py --out sample_configs/unet_lpba40_4mm.pt

The images are preprocessed with napari-invert's own pipeline (RAS, 4 mm, percentile
intensity scaling, crop to the brain masks padded to a multiple of 8) so that the audit's
``preprocess:`` block matches training exactly. Training subjects: S01-S15 (the config's
``trained_on``). Plain PyTorch loop: Dice + cross-entropy, Adam, random flips.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from napari_invert.config import PreprocessConfig, default_data_root
from napari_invert.data.cohort import Cohort
from napari_invert.data.prepare import prepare_cohort

TRAINED_ON = [f"S{i:02d}" for i in range(1, 16)]


def save(net: torch.nn.Module, out: str) -> None:
    """``torch.save(state_dict)`` via a temporary file, so a stopped run leaves whole weights."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="sample_configs/unet_lpba40_4mm.pt")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--data", default=str(default_data_root() / "lpba40"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=25, help="also save the weights every N steps")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cohort = Cohort.from_path(args.data, kind="lpba40")
    prepared = prepare_cohort(
        cohort,
        PreprocessConfig(voxel_mm=4.0, cache=False),
        multiple_of=8,
        variant="skull_stripped",
        label_mode="restrict_to_mask",
        progress=False,
    )
    subjects = [prepared[s] for s in TRAINED_ON]
    x = torch.from_numpy(np.stack([s.image for s in subjects]))[:, None]
    y = torch.from_numpy(np.stack([s.labels for s in subjects]))[:, None]
    n_classes = prepared.n_classes
    print(f"grid {prepared.shape}, {n_classes} classes, {len(subjects)} training subjects", flush=True)
    net = UNet(3, 1, n_classes, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = rng.choice(len(subjects), size=2, replace=False)
        xb, yb = x[idx].clone(), y[idx].clone()
        for axis in (2, 3, 4):
            if rng.random() < 0.5:
                xb, yb = xb.flip(axis), yb.flip(axis)
        opt.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if (step + 1) % args.save_every == 0:
            save(net, args.out)
            print(f"saved after {step + 1} steps", flush=True)
    save(net, args.out)
    print(f"saved {args.out} ({n_classes} output channels)")


if __name__ == "__main__":
    main()
