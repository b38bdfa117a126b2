"""The published numbers of Subbanna et al. 2021, printed beside ours in every table.

Source: Subbanna, Wilms, Tuladhar, Forkert, "An Analysis of the Vulnerability of Two Common
Deep Learning-Based Medical Image Segmentation Techniques to Model Inversion Attacks",
Sensors 2021, 21, 3874. Each constant names the table or section it is copied from.

What the paper's metrics are (see ``../shared/paper/README.md``):

* "MCC" is the Pearson correlation of grey levels (our metric ``correlation``).
* "SSIM" is ONE GLOBAL SSIM over the voxels of the original above a threshold (our metric
  ``ssim_global``), not the windowed Gaussian SSIM of Wang et al. (our metric ``ssim``).
* Every experiment is on LPBA40, 40 subjects, 4 folds of 10 private / 30 attack subjects.

Values are ``(mean, sd)`` tuples; counts are out of :data:`PAPER_N`.

Which of our rows the paper's numbers belong beside (the one place this mapping is made):
the paper attacks "the latent space representation" ``Z = Enc(X)``, "the most compressed
representation of the images in the network" (Sections 1 and 2.3, Figure 3, assumption 1),
and its inversion decoder is ``X^ = D^(Z)``. That is our ``bottleneck`` tap. Our
``bottleneck+skips`` (U-Net) and ``bottleneck+indices`` (SegNet) taps also read the skip
features or pooling indices, which carry the image nearly 1:1 at level 0: they are *beyond the
paper's attack*, and a number on them is never put beside (or said to "beat") the paper's.
The untrained-victim control and defended victims get no paper numbers either.
"""

from __future__ import annotations


def comparable(arch: str, tap: str) -> bool:
    """True when the paper's numbers for ``arch`` belong beside our row of ``(arch, tap)``:
    the trained U-Net / SegNet attacked through the latent space (``bottleneck``) only."""
    return arch in ("unet", "segnet") and tap == "bottleneck"


#: Number of subjects (all of them reconstructed once over the 4 folds), paper Section 3.4.
PAPER_N: int = 40
#: Folds, paper Section 3.4.
PAPER_FOLDS: int = 4

#: Table 1 (mean ± SD over the 40 reconstructions, against the true original).
#: Keys: ``(arch, variant)`` -> ``{"correlation": (mean, sd), "ssim_global": (mean, sd)}``.
TABLE1: dict[tuple[str, str], dict[str, tuple[float, float]]] = {
    ("unet", "skull_stripped"): {"correlation": (0.60, 0.14), "ssim_global": (0.73, 0.12)},
    ("segnet", "skull_stripped"): {"correlation": (0.53, 0.13), "ssim_global": (0.61, 0.12)},
    ("unet", "full_head"): {"correlation": (0.43, 0.15), "ssim_global": (0.50, 0.11)},
    ("segnet", "full_head"): {"correlation": (0.39, 0.13), "ssim_global": (0.43, 0.13)},
}

#: Column titles of Table 1 in the paper, same keys as :data:`TABLE1`.
TABLE1_COLUMNS: dict[tuple[str, str], str] = {
    ("unet", "skull_stripped"): "U-Net-Skull Stripped",
    ("segnet", "skull_stripped"): "SegNet-Skull Stripped",
    ("unet", "full_head"): "U-Net with Skull",
    ("segnet", "full_head"): "SegNet with Skull",
}

#: Table 2 (skull-stripped only): score with the true original vs with all other subjects.
#: Keys: ``arch`` -> ``{metric: {"originals": (mean, sd), "others": (mean, sd)}}``.
#: Note: the paper's SegNet MCC "with originals" is 0.52 ± 0.13 here but 0.53 ± 0.13 in
#: Table 1; both are copied as printed.
TABLE2: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "unet": {
        "ssim_global": {"originals": (0.73, 0.12), "others": (0.50, 0.23)},
        "correlation": {"originals": (0.60, 0.14), "others": (0.52, 0.22)},
    },
    "segnet": {
        "ssim_global": {"originals": (0.61, 0.12), "others": (0.49, 0.23)},
        "correlation": {"originals": (0.52, 0.13), "others": (0.45, 0.20)},
    },
}

#: Table 3 (skull-stripped only): correct top-1 matches out of :data:`PAPER_N`.
#: Keys: ``arch`` -> ``{metric: count}``; the paper's "SSIM match" is its global SSIM.
TABLE3: dict[str, dict[str, int]] = {
    "unet": {"correlation": 16, "ssim_global": 30, "deformation": 24},
    "segnet": {"correlation": 14, "ssim_global": 26, "deformation": 22},
}

#: Mean rank of the true original, Sections 4.2.1 (SSIM) and 4.2.2 (deformation).
MEAN_RANK: dict[str, dict[str, float]] = {
    "unet": {"ssim_global": 1.5, "deformation": 1.8},
    "segnet": {"ssim_global": 1.6, "deformation": 1.8},
}

#: Rank histogram of the true original under SSIM, Section 4.2.1 (rank -> count of 40).
SSIM_RANK_COUNTS: dict[str, dict[int, int]] = {
    "unet": {1: 30, 2: 5, 3: 2, 4: 2, 5: 1},
    "segnet": {1: 26, 2: 8, 3: 3, 4: 2, 6: 1},
}

#: Dice with the manual labels, Section 4.2.3 (skull-stripped): segmentation of the
#: original images and of the reconstructions by the same trained network (mean, sd).
DICE: dict[str, dict[str, tuple[float, float]]] = {
    "unet": {"original": (0.53, 0.14), "reconstruction": (0.37, 0.17)},
    "segnet": {"original": (0.48, 0.13), "reconstruction": (0.32, 0.12)},
}

#: Range of the paper's SSIM over all reconstructions, Section 5.
SSIM_RANGE: tuple[float, float] = (0.39, 0.88)

CITATION: str = (
    "Subbanna N, Wilms M, Tuladhar A, Forkert ND. An Analysis of the Vulnerability of Two "
    "Common Deep Learning-Based Medical Image Segmentation Techniques to Model Inversion "
    "Attacks. Sensors 2021;21(11):3874. doi:10.3390/s21113874"
)

LPBA40_CITATION: str = (
    "Shattuck DW, Mirza M, Adisetiyo V, Hojatkashani C, Salamon G, Narr KL, Poldrack RA, "
    "Bilder RM, Toga AW. Construction of a 3D probabilistic atlas of human cortical "
    "structures. NeuroImage 2008;39(3):1064-1080 (LONI Probabilistic Brain Atlas, LPBA40)."
)

IXI_CITATION: str = (
    "IXI dataset (Imperial College London, Hammersmith Hospital), CC BY-SA 3.0; "
    "downsampled and segmented (DLMUSE) by the NiChart project's public test data."
)


def fmt(value: tuple[float, float] | None) -> str:
    """``(0.6, 0.14)`` -> ``"0.60 ± 0.14"``; ``None`` -> ``"–"``."""
    if value is None:
        return "–"
    return f"{value[0]:.2f} ± {value[1]:.2f}"
