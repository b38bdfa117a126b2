"""What the attacker reads: the grammar of tap names for our U-Net and SegNet victims.

A tap name is one or more tokens joined by ``+``:

* ``bottleneck`` — the latent code ``Z = Enc(X)`` (the paper's "latent space");
* ``skips`` (U-Net) — every skip feature map, levels ``0..L-1``; ``skip<k>`` — level ``k`` only
  (level 0 = full resolution);
* ``indices`` (SegNet) — every max-pooling index map; ``indices<k>`` — level ``k`` only.

Examples: ``bottleneck``, ``bottleneck+skips``, ``bottleneck+indices``, ``skip0``,
``bottleneck+skip3``, ``bottleneck+indices0``. The tensors are returned bottleneck first, then
skips by level, then indices by level, whatever the order of the tokens.

Pitfall: pooling indices are positions, not intensities; a tap made only of ``indices`` tokens
has no feature map to unpool and is refused (combine it with ``bottleneck`` or a skip).
Level-0 skips and indices carry the image nearly 1:1 (the report shows a measured row).
"""

from __future__ import annotations

import re

#: The historical options, kept as the defaults (and listed by the plugin).
VALID_TAPS: dict[str, tuple[str, ...]] = {
    "unet": ("bottleneck", "bottleneck+skips"),
    "segnet": ("bottleneck", "bottleneck+indices"),
}

_TOKEN = re.compile(r"^(bottleneck|skips|indices|skip(\d+)|indices(\d+))$")


def parse_tap(tap: str, arch: str, levels: int | None = None) -> list[str]:
    """Names of the tensors a tap reads, in return order.

    Parameters
    ----------
    tap
        A tap name (see the module docstring).
    arch
        ``unet`` or ``segnet`` (skips exist only in the U-Net, indices only in SegNet).
    levels
        Number of pooling levels of the victim; ``skips``/``indices`` expand to levels
        ``0..levels-1`` and level numbers are checked. ``None`` checks the grammar only and
        returns the tokens.

    Raises
    ------
    ValueError
        With a message naming the offending token.
    """
    if arch not in VALID_TAPS:
        raise ValueError(f"tap '{tap}': unknown architecture '{arch}' (taps by name exist for unet, segnet)")
    tokens = [t.strip() for t in str(tap).split("+")]
    if not tokens or any(not t for t in tokens):
        raise ValueError(f"tap '{tap}': empty token (write e.g. 'bottleneck+skip0')")
    bottleneck = False
    skips: set[int] = set()
    indices: set[int] = set()
    for token in tokens:
        m = _TOKEN.match(token)
        if m is None:
            raise ValueError(
                f"tap '{tap}': unknown token '{token}' (use bottleneck, skips, skip<k>, indices, indices<k>)"
            )
        if token == "bottleneck":
            bottleneck = True
            continue
        is_skip = token.startswith("skip")
        if is_skip and arch != "unet":
            raise ValueError(f"tap '{tap}': {arch} has no skip connections (only the U-Net has)")
        if not is_skip and arch != "segnet":
            raise ValueError(f"tap '{tap}': {arch} has no pooling indices (only SegNet has)")
        target = skips if is_skip else indices
        level = m.group(2) or m.group(3)
        if level is None:  # 'skips' / 'indices': every level
            if levels is None:
                target.add(-1)
            else:
                target.update(range(levels))
            continue
        k = int(level)
        if levels is not None and k >= levels:
            raise ValueError(f"tap '{tap}': level {k} does not exist (levels 0..{levels - 1})")
        target.add(k)
    if not bottleneck and not skips:
        raise ValueError(f"tap '{tap}': pooling indices alone carry no feature map; add bottleneck")
    if levels is None:
        return tokens
    return (
        (["bottleneck"] if bottleneck else [])
        + [f"skip{k}" for k in sorted(skips)]
        + [f"indices{k}" for k in sorted(indices)]
    )


def tap_levels(tap: str, arch: str, levels: int) -> dict[str, list[int]]:
    """``{"skips": [...], "indices": [...]}``: which levels a tap exposes."""
    names = parse_tap(tap, arch, levels)
    return {
        "skips": [int(n[4:]) for n in names if n.startswith("skip")],
        "indices": [int(n[7:]) for n in names if n.startswith("indices")],
    }


def beyond_paper(tap: str) -> bool:
    """True when a tap reads more than the paper's latent space (the bottleneck alone)."""
    return tap != "bottleneck"
