"""Helpers for the own-model tests: a tiny cohort on disk and real MONAI networks trained
for a few steps on it, saved the ways users save them (state dict, safetensors, bundle,
TorchScript, nnU-Net-style folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_invert.data.nifti import save_nifti

SHAPE = (20, 20, 20)
N_CLASSES = 3


def write_cohort(root: Path, n: int = 6, seed: int = 0) -> list[str]:
    """Generic-folder cohort: ``images/``, ``labels/`` (3 classes) of ``n`` subjects,
    smooth random blobs inside an ellipsoid (skull-stripped, mask = image > 0)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = (zz / 0.8) ** 2 + (yy / 0.85) ** 2 + (xx / 0.75) ** 2 < 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    ids = [f"T{i:02d}" for i in range(1, n + 1)]
    for sid in ids:
        img = ndimage.gaussian_filter(rng.random(SHAPE), 1.5)
        img = (img - img.min()) / (np.ptp(img) + 1e-6) * 0.8 + 0.2
        img = np.where(brain, img, 0).astype(np.float32)
        lab = np.zeros(SHAPE, np.uint8)
        lab[brain] = 1
        lab[brain & (img > np.median(img[brain]))] = 2
        save_nifti(root / "images" / f"{sid}.nii.gz", img, affine)
        save_nifti(root / "labels" / f"{sid}.nii.gz", lab, affine)
    return ids


def load_training_arrays(root: Path, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    import nibabel as nib

    x = np.stack([np.asarray(nib.load(str(root / "images" / f"{s}.nii.gz")).dataobj) for s in ids])
    y = np.stack([np.asarray(nib.load(str(root / "labels" / f"{s}.nii.gz")).dataobj) for s in ids])
    # pad 20 -> 24 (multiple of 8), as the audit's preprocessing will
    pad = [(0, 0)] + [(2, 2)] * 3
    x = np.pad(x, pad)
    y = np.pad(y, pad)
    return torch.from_numpy(x.astype(np.float32))[:, None], torch.from_numpy(y.astype(np.int64))


def train_few_steps(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 3
) -> torch.nn.Module:
    """A few Adam steps of cross-entropy: real training, so the weights differ from init."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        out = net(x)
        if out.ndim == 6:  # deep supervision stacks heads
            out = out[:, 0]
        torch.nn.functional.cross_entropy(out, y).backward()
        opt.step()
    return net.eval()


def monai_unet_args() -> dict:
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": N_CLASSES,
        "channels": [4, 8, 16],
        "strides": [2, 2],
    }


def segresnet_args() -> dict:
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": N_CLASSES,
        "init_filters": 8,
        "blocks_down": [1, 1, 1],
        "blocks_up": [1, 1],
    }


def dynunet_args() -> dict:
    return {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": N_CLASSES,
        "kernel_size": [3, 3, 3],
        "strides": [1, 2, 2],
        "upsample_kernel_size": [2, 2],
        "filters": [4, 8, 16],
    }


def write_bundle(folder: Path, net: torch.nn.Module, network_def: dict) -> Path:
    """MONAI bundle layout: configs/inference.json (network_def), configs/metadata.json,
    models/model.pt (state dict)."""
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "configs" / "inference.json").write_text(
        json.dumps({"imports": ["$import os"], "network_def": network_def, "device": "$torch.device('cpu')"})
    )
    (folder / "configs" / "metadata.json").write_text(
        json.dumps({"network_data_format": {"inputs": {"image": {"num_channels": 1}}}})
    )
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def nnunet_arch(n_stages: int = 3) -> dict:
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [4, 8, 16][:n_stages],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n_stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
            "n_conv_per_stage": [1] * n_stages,
            "n_conv_per_stage_decoder": [1] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def build_nnunet_net():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    kw = dict(nnunet_arch()["arch_kwargs"])
    kw["conv_op"] = torch.nn.Conv3d
    kw["norm_op"] = torch.nn.InstanceNorm3d
    kw["nonlin"] = torch.nn.LeakyReLU
    return PlainConvUNet(input_channels=1, num_classes=N_CLASSES, deep_supervision=False, **kw)


def write_nnunet(folder: Path, net: torch.nn.Module, extra: dict | None = None) -> Path:
    """nnU-Net v2 trained-model folder: plans.json, dataset.json, fold_0/checkpoint_final.pth
    (``{"network_weights", "trainer_name", "current_epoch", ...extra}``)."""
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    plans = {
        "dataset_name": "Dataset001_Tiny",
        "configurations": {
            "3d_fullres": {
                "patch_size": [24, 24, 24],
                "spacing": [2.0, 2.0, 2.0],
                "architecture": nnunet_arch(),
            }
        },
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 4}
        )
    )
    ckpt = {
        "network_weights": net.state_dict(),
        "trainer_name": "nnUNetTrainer",
        "current_epoch": 3,
        **(extra or {}),
    }
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    return folder
