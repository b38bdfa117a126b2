"""What every model source returns: the network and how to rebuild it untrained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class LoadedModel:
    """A user's network as read by one source.

    ``rebuild``: a function returning the same architecture freshly initialised (the
    untrained-victim control), or ``None`` with ``untrained_note`` saying why not.
    ``in_channels`` / ``patch_size`` / ``multiple_of``: what the source itself knows
    (``None`` = unknown). ``description``: JSON-ready provenance (files, class, args).
    """

    module: nn.Module
    rebuild: Callable[[], nn.Module] | None
    description: dict[str, Any] = field(default_factory=dict)
    in_channels: int | None = None
    patch_size: tuple[int, int, int] | None = None
    multiple_of: int | None = None
    untrained_note: str | None = None
