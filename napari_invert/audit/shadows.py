"""Shadow segmenters of the user's own architecture, for the audit's likelihood-ratio attack.

LiRA (offline / global, :mod:`napari_invert.membership.attacks`) compares the user's
model's fit to a candidate with that of *shadow* segmenters the attacker trains, with the
victim's recipe, on halves of its own subjects. The audit can do this whenever the model
source can rebuild the architecture (``monai``, ``bundle``, ``nnunet``, ``entry_point``:
the untrained copy of :meth:`ModelAdapter.untrained`); a TorchScript file cannot be
rebuilt and retrained, and the audit then keeps the threshold attacks only
(:func:`shadow_support` says why).

:class:`UserShadows` is the :class:`~napari_invert.membership.shadows.ShadowFactory` handed
to :func:`~napari_invert.membership.shadows.train_shadows`; each shadow is a
:class:`UserSegmenter` (the rebuilt network, trainable, with what
:func:`~napari_invert.models.train_segmenter` needs), saved as safetensors + JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from napari_invert.checkpoint import load_checkpoint, load_module_state, save_checkpoint
from napari_invert.errors import CheckpointError

ARCH = "user"


def shadow_support(adapter: Any) -> str | None:
    """``None`` when shadows of ``adapter``'s architecture can be trained, else why not."""
    if adapter.is_torchscript:
        return (
            "not available for a TorchScript model: its architecture cannot be rebuilt and retrained "
            "from the file (give the network as kind monai / bundle / nnunet / entry_point to train shadows)"
        )
    if adapter.loaded.rebuild is None:
        return f"not available: {adapter.loaded.untrained_note or 'this source cannot rebuild its network'}"
    if adapter.out_channels is None:
        return "not available: the network's number of output classes is unknown"
    return None


class UserSegmenter(nn.Module):
    """The user's (rebuilt) network as a trainable segmenter: ``net(x)`` -> logits
    ``(B, n_classes, X, Y, Z)`` (the first output of a tuple / deep-supervision stack)."""

    arch = ARCH

    def __init__(self, net: nn.Module, spec: dict[str, Any], multiple_of: int, patch_size=None) -> None:
        super().__init__()
        self.net = net
        self._spec = spec
        self.n_classes = int(spec["n_classes"])
        self.in_channels = int(spec["in_channels"])
        self.multiple_of = int(multiple_of)
        self.patch_size = tuple(patch_size) if patch_size else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == x.ndim + 1:  # e.g. DynUNet deep supervision in training mode: (B, heads, C, ...)
            out = out[:, 0]
        return out

    @torch.no_grad()
    def volume_logits(self, x: Tensor) -> Tensor:
        """Whole-volume logits, by sliding window when the model was trained on patches."""
        if self.patch_size:
            from monai.inferers import sliding_window_inference

            return sliding_window_inference(x, self.patch_size, 1, self.forward, mode="gaussian")
        return self.forward(x)

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"user model: expected input (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}"
            )
        bad = [int(s) for s in x.shape[2:] if s % self.multiple_of]
        if bad:
            raise ValueError(
                f"user model: spatial size {tuple(x.shape[2:])} is not divisible by {self.multiple_of}"
            )

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)


class UserShadows:
    """:class:`~napari_invert.membership.shadows.ShadowFactory` for the user's architecture."""

    def __init__(self, adapter: Any) -> None:
        why = shadow_support(adapter)
        if why:
            raise ValueError(why)
        self.adapter = adapter
        self._spec = {
            "arch": ARCH,
            "source": adapter.description,
            "n_classes": int(adapter.out_channels),
            "in_channels": int(adapter.in_channels),
        }

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    def build(self, seed: int) -> UserSegmenter:
        fresh, reason = self.adapter.untrained(seed)  # seeds torch, rebuilds the architecture
        if fresh is None:  # pragma: no cover - shadow_support checked it
            raise ValueError(reason)
        net = fresh.module
        net.requires_grad_(True)
        return UserSegmenter(net, self.spec(), self.adapter.multiple_of, self.adapter.patch_size)

    def save(self, stem: Path, model: nn.Module, meta: dict[str, Any]) -> None:
        save_checkpoint(stem, dict(model.state_dict()), {**meta, "kind": "user_shadow", **self.spec()})

    def load(self, stem: Path, device: str | torch.device) -> tuple[UserSegmenter, dict[str, Any]]:
        tensors, meta = load_checkpoint(stem, device="cpu")
        if meta.get("kind") != "user_shadow":
            raise CheckpointError(
                f"{stem}.json: not a shadow of the user's model (kind={meta.get('kind')!r})"
            )
        model = self.build(0)
        load_module_state(model, tensors, f"{stem}.safetensors")
        return model.to(device).eval(), meta
