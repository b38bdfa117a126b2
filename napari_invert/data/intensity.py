"""Intensity normalisation, bias-field correction and skull stripping.

All functions take ``(X, Y, Z)`` arrays and an optional bool ``mask`` of the same shape
(the brain); statistics are computed inside the mask only (all voxels when ``mask`` is
``None``, which for skull-stripped images includes the zero background). Outputs are
float32. Degenerate input (empty mask, constant intensity in the mask) raises
``ValueError``; callers that know the file turn it into ``DataError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Nyul landmarks: the 1st and 99th percentiles (ends of the standard scale) and deciles.
NYUL_PERCENTILES: tuple[float, ...] = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


def _values(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        values = image.ravel()
    else:
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
        values = image[mask.astype(bool, copy=False)]
    if values.size == 0:
        raise ValueError("empty mask: no voxel to compute intensity statistics from")
    return values.astype(np.float64, copy=False)


def percentile_scale(
    image: np.ndarray, mask: np.ndarray | None = None, low: float = 0.5, high: float = 99.5
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles (inside ``mask``) to 0/1 and clip to [0, 1].

    Returns float32 ``(X, Y, Z)`` in [0, 1] (voxels outside the mask are scaled the same
    way). Raises ``ValueError`` if the two percentiles coincide (constant intensity).
    """
    if not 0 <= low < high <= 100:
        raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
    lo, hi = np.percentile(_values(image, mask), [low, high])
    if hi <= lo:
        raise ValueError("constant intensity within the mask: cannot scale")
    out = (image.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def zscore(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``(image - mean) / std`` with mean and std taken inside ``mask``; float32, unbounded."""
    values = _values(image, mask)
    mean, std = float(values.mean()), float(values.std())
    if std <= 0:
        raise ValueError("constant intensity within the mask: cannot z-score")
    return ((image.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)


def skull_strip(image: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Image with every voxel outside the brain ``mask`` set to ``fill``; float32."""
    if mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    return np.where(mask.astype(bool, copy=False), image, fill).astype(np.float32)


def _strictly_increasing(values: np.ndarray) -> np.ndarray:
    """Nudge tied landmarks apart (images with large flat regions) so interpolation works."""
    out = np.maximum.accumulate(np.asarray(values, dtype=np.float64))
    span = max(float(out[-1] - out[0]), 1.0)
    eps = span * 1e-9
    for i in range(1, out.size):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + eps
    return out


def _piecewise_linear(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """``np.interp`` with linear extrapolation by the end segments."""
    y = np.interp(x, xp, fp)
    lo_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
    hi_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    below, above = x < xp[0], x > xp[-1]
    y[below] = fp[0] + (x[below] - xp[0]) * lo_slope
    y[above] = fp[-1] + (x[above] - xp[-1]) * hi_slope
    return y


@dataclass
class NyulStandardizer:
    """Piecewise-linear histogram standardisation (Nyul & Udupa 1999; Nyul et al. 2000).

    :meth:`fit` learns one set of standard landmarks from the images it is given: the
    intensity percentiles ``percentiles`` of each image (inside its mask) are mapped
    linearly so that the first and last land on ``scale`` and then averaged.
    :meth:`transform` maps an image's own landmarks onto the standard ones, linear in
    between and extrapolated beyond. Fit it **only on data the user of the landmarks
    may see** (e.g. the attack set, never the private training subjects of a victim).

    Two images that differ by a positive affine intensity change ``a * x + b`` are
    mapped to the same standardised image.
    """

    percentiles: tuple[float, ...] = NYUL_PERCENTILES
    scale: tuple[float, float] = (0.0, 1.0)
    landmarks: np.ndarray | None = field(default=None)
    n_fitted: int = 0

    def __post_init__(self) -> None:
        self.percentiles = tuple(float(p) for p in self.percentiles)
        if len(self.percentiles) < 2 or any(b <= a for a, b in zip(self.percentiles, self.percentiles[1:])):
            raise ValueError("percentiles must be at least two, strictly increasing")
        if self.percentiles[0] < 0 or self.percentiles[-1] > 100:
            raise ValueError("percentiles must lie in [0, 100]")
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        if self.scale[1] <= self.scale[0]:
            raise ValueError("scale must be (low, high) with low < high")
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float64)

    @property
    def is_fitted(self) -> bool:
        return self.landmarks is not None

    def image_landmarks(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Intensity percentiles of one image inside its mask, shape ``(L,)``."""
        lm = np.percentile(_values(image, mask), self.percentiles)
        if lm[-1] <= lm[0]:
            raise ValueError("constant intensity within the mask: no Nyul landmarks")
        return lm

    def fit(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None
    ) -> NyulStandardizer:
        """Learn the standard landmarks from ``images`` (and their masks); returns ``self``."""
        if len(images) == 0:
            raise ValueError("NyulStandardizer.fit needs at least one image")
        if masks is None:
            masks = [None] * len(images)
        if len(masks) != len(images):
            raise ValueError("need one mask per image")
        s0, s1 = self.scale
        mapped = []
        for image, mask in zip(images, masks):
            lm = self.image_landmarks(image, mask)
            mapped.append(s0 + (lm - lm[0]) / (lm[-1] - lm[0]) * (s1 - s0))
        self.landmarks = np.mean(mapped, axis=0)
        self.n_fitted = len(images)
        return self

    def transform(self, image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Standardise one image: float32 ``(X, Y, Z)``, about ``scale`` for in-mask voxels."""
        if self.landmarks is None:
            raise RuntimeError("NyulStandardizer is not fitted")
        lm = _strictly_increasing(self.image_landmarks(image, mask))
        std = self.landmarks
        out = _piecewise_linear(image.astype(np.float64).ravel(), lm, std)
        return out.reshape(image.shape).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (percentiles, scale, landmarks, number of images fitted)."""
        return {
            "method": "nyul",
            "percentiles": list(self.percentiles),
            "scale": list(self.scale),
            "landmarks": None if self.landmarks is None else [float(v) for v in self.landmarks],
            "n_fitted": self.n_fitted,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NyulStandardizer:
        """Inverse of :meth:`to_dict`."""
        lm = data.get("landmarks")
        return cls(
            percentiles=tuple(data["percentiles"]),
            scale=tuple(data.get("scale", (0.0, 1.0))),  # type: ignore[arg-type]
            landmarks=None if lm is None else np.asarray(lm, dtype=np.float64),
            n_fitted=int(data.get("n_fitted", 0)),
        )


def n4_correct(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    shrink_factor: int = 2,
    iterations: Sequence[int] = (50, 50, 30, 20),
    spline_distance_mm: float = 100.0,
) -> np.ndarray:
    """N4 bias-field correction (Tustison et al. 2010) via ``ants.n4_bias_field_correction``.

    ``image``: ``(X, Y, Z)`` intensities >= 0 (N4 works on their logarithm); ``mask``:
    voxels used to estimate the field (the brain); ``spacing``: voxel size in mm. The
    smooth multiplicative field is estimated inside the mask and divided out everywhere.
    Returns float32 ``(X, Y, Z)``. Costs ~1 s per 64^3 volume on one core.
    """
    import ants  # slow import: only when N4 is requested

    if image.ndim != 3:
        raise ValueError(f"n4_correct expects a 3D image, got shape {image.shape}")
    if float(np.min(image)) < 0:
        raise ValueError("N4 needs non-negative intensities")
    spacing = tuple(float(s) for s in spacing)
    img = ants.from_numpy(np.ascontiguousarray(image, dtype=np.float32), spacing=spacing)
    ants_mask = None
    if mask is not None:
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")
        if not mask.any():
            raise ValueError("empty mask: nothing to estimate the bias field from")
        ants_mask = ants.from_numpy(np.ascontiguousarray(mask, dtype=np.float32), spacing=spacing)
    out = ants.n4_bias_field_correction(
        img,
        mask=ants_mask,
        shrink_factor=int(shrink_factor),
        convergence={"iters": [int(i) for i in iterations], "tol": 1e-7},
        spline_param=float(spline_distance_mm),
        verbose=False,
    )
    return np.asarray(out.numpy(), dtype=np.float32)
