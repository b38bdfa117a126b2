"""Label tables: original label values <-> contiguous classes ``0..C-1`` (0 = background).

A segmenter needs classes ``0..C-1``; label maps on disk use arbitrary values (LPBA40:
21..182 with gaps, 56 structures). :class:`LabelTable` holds the sorted non-zero values
of one cohort; value ``values[k]`` is class ``k + 1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: LPBA40 structure names (Shattuck et al. 2008). 181/182 lie (mostly) outside the
#: skull-stripped LPBA40 images: see ``label_mode`` in :mod:`napari_invert.data.prepare`.
LPBA40_NAMES: dict[int, str] = {
    21: "L superior frontal gyrus", 22: "R superior frontal gyrus",
    23: "L middle frontal gyrus", 24: "R middle frontal gyrus",
    25: "L inferior frontal gyrus", 26: "R inferior frontal gyrus",
    27: "L precentral gyrus", 28: "R precentral gyrus",
    29: "L middle orbitofrontal gyrus", 30: "R middle orbitofrontal gyrus",
    31: "L lateral orbitofrontal gyrus", 32: "R lateral orbitofrontal gyrus",
    33: "L gyrus rectus", 34: "R gyrus rectus",
    41: "L postcentral gyrus", 42: "R postcentral gyrus",
    43: "L superior parietal gyrus", 44: "R superior parietal gyrus",
    45: "L supramarginal gyrus", 46: "R supramarginal gyrus",
    47: "L angular gyrus", 48: "R angular gyrus",
    49: "L precuneus", 50: "R precuneus",
    61: "L superior occipital gyrus", 62: "R superior occipital gyrus",
    63: "L middle occipital gyrus", 64: "R middle occipital gyrus",
    65: "L inferior occipital gyrus", 66: "R inferior occipital gyrus",
    67: "L cuneus", 68: "R cuneus",
    81: "L superior temporal gyrus", 82: "R superior temporal gyrus",
    83: "L middle temporal gyrus", 84: "R middle temporal gyrus",
    85: "L inferior temporal gyrus", 86: "R inferior temporal gyrus",
    87: "L parahippocampal gyrus", 88: "R parahippocampal gyrus",
    89: "L lingual gyrus", 90: "R lingual gyrus",
    91: "L fusiform gyrus", 92: "R fusiform gyrus",
    101: "L insular cortex", 102: "R insular cortex",
    121: "L cingulate gyrus", 122: "R cingulate gyrus",
    161: "L caudate", 162: "R caudate",
    163: "L putamen", 164: "R putamen",
    165: "L hippocampus", 166: "R hippocampus",
    181: "cerebellum", 182: "brainstem",
}  # fmt: skip


def unique_labels(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (fast ``bincount`` path for small ranges)."""
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind in "ub" or (array.dtype.kind == "i" and array.min() >= 0):
        hi = int(array.max())
        if hi < 1 << 20:
            counts = np.bincount(array.ravel().astype(np.intp, copy=False), minlength=hi + 1)
            return np.flatnonzero(counts).astype(np.int64)
    return np.unique(array).astype(np.int64)


@dataclass(frozen=True)
class LabelTable:
    """Original label values and their contiguous classes.

    ``values``: sorted distinct non-zero original values; ``values[k]`` is class ``k + 1``
    and 0 is always background (class 0). ``names``: optional ``{value: name}``.
    """

    values: tuple[int, ...]
    names: dict[int, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        vals = tuple(sorted({int(v) for v in self.values} - {0}))
        object.__setattr__(self, "values", vals)
        if self.names is not None:
            object.__setattr__(self, "names", {int(k): str(v) for k, v in self.names.items()})

    def __hash__(self) -> int:
        return hash(self.values)

    # construction ----------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, arrays: Iterable[np.ndarray], names: Mapping[int, str] | None = None) -> LabelTable:
        """Table of every non-zero value found in ``arrays`` (integer label maps)."""
        found: set[int] = set()
        for arr in arrays:
            found.update(int(v) for v in unique_labels(np.asarray(arr)))
        return cls(tuple(found), dict(names) if names is not None else None)

    @classmethod
    def from_names(cls, names: Mapping[int, str]) -> LabelTable:
        """Table declared by a ``{value: name}`` mapping (e.g. :data:`LPBA40_NAMES`)."""
        return cls(tuple(int(k) for k in names), dict(names))

    def without(self, values: Iterable[int]) -> LabelTable:
        """A table with ``values`` removed (their voxels become background)."""
        drop = {int(v) for v in values}
        return LabelTable(tuple(v for v in self.values if v not in drop), self.names)

    # queries ---------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Number of classes including background 0."""
        return len(self.values) + 1

    @property
    def n_structures(self) -> int:
        """Number of labelled structures (non-zero values)."""
        return len(self.values)

    def name(self, value: int) -> str:
        """Name of an original value (``"background"`` for 0, ``"label <v>"`` if unnamed)."""
        if int(value) == 0:
            return "background"
        if self.names and int(value) in self.names:
            return self.names[int(value)]
        return f"label {int(value)}"

    @property
    def class_names(self) -> list[str]:
        """Names of classes ``0..C-1``."""
        return ["background"] + [self.name(v) for v in self.values]

    def unknown_values(self, labels: np.ndarray) -> list[int]:
        """Values in ``labels`` that are neither 0 nor in the table (sorted)."""
        known = set(self.values) | {0}
        return [int(v) for v in unique_labels(np.asarray(labels)) if int(v) not in known]

    # mapping ---------------------------------------------------------------------------
    def to_contiguous(self, labels: np.ndarray) -> np.ndarray:
        """Original values -> classes ``0..C-1`` (int64, same shape).

        Raises ``ValueError`` listing the values that are not in the table.
        """
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iub":
            raise ValueError(f"label array must be integer, got {labels.dtype}")
        if labels.dtype == np.bool_:
            labels = labels.astype(np.uint8)
        table = np.asarray((0, *self.values), dtype=np.int64)
        if labels.size == 0:
            return labels.astype(np.int64)
        lo, hi = int(labels.min()), int(labels.max())
        if lo >= 0 and hi < 1 << 20:
            lut = np.full(max(hi, table[-1]) + 1, -1, dtype=np.int64)
            lut[table] = np.arange(table.size)
            out = lut[labels]
            bad = out < 0
        else:  # negative or huge values: map the distinct values through a dict
            lookup = {int(v): k for k, v in enumerate(table.tolist())}
            uniq, inverse = np.unique(labels, return_inverse=True)
            mapped = np.array([lookup.get(int(v), -1) for v in uniq], dtype=np.int64)
            out = mapped[inverse].reshape(labels.shape)
            bad = out < 0
        if bad.any():
            unknown = sorted({int(v) for v in np.unique(labels[bad])})
            shown = ", ".join(str(v) for v in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise ValueError(f"unknown label values {shown} (not in the cohort's label table)")
        return out

    def to_original(self, classes: np.ndarray) -> np.ndarray:
        """Classes ``0..C-1`` -> original values (int64). ``ValueError`` if out of range."""
        classes = np.asarray(classes)
        if classes.dtype.kind not in "iub":
            raise ValueError(f"class array must be integer, got {classes.dtype}")
        if classes.size and (int(classes.min()) < 0 or int(classes.max()) >= self.n_classes):
            raise ValueError(f"class values must lie in 0..{self.n_classes - 1}")
        table = np.asarray((0, *self.values), dtype=np.int64)
        return table[classes]

    # serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"values": [...], "names": {"<value>": name} | None}``."""
        names = None if self.names is None else {str(k): v for k, v in sorted(self.names.items())}
        return {"values": list(self.values), "names": names}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelTable:
        """Inverse of :meth:`to_dict`."""
        names = data.get("names")
        return cls(
            tuple(int(v) for v in data["values"]),
            None if names is None else {int(k): str(v) for k, v in names.items()},
        )


def parse_label_names(raw: Any, source: str = "label_names") -> dict[int, str]:
    """``{value: name}`` from a YAML mapping or a list of ``{value, name}`` entries."""
    out: dict[int, str] = {}
    if isinstance(raw, Mapping):
        items: Sequence[tuple[Any, Any]] = list(raw.items())
    elif isinstance(raw, list):
        items = []
        for entry in raw:
            if not isinstance(entry, Mapping) or "value" not in entry:
                raise ValueError(f"{source}: list entries need 'value' and 'name'")
            items.append((entry["value"], entry.get("name", f"label {entry['value']}")))
    else:
        raise ValueError(f"{source}: expected a mapping value -> name")
    for key, name in items:
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: label value {key!r} is not an integer") from None
        if value != 0:
            out[value] = str(name)
    return out
