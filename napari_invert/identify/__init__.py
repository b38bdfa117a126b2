"""Re-identification of training subjects from reconstructions (ranks, top-k).

See :mod:`napari_invert.identify.reid`.
"""

from napari_invert.identify.reid import IdentificationResult, identification_summary, rank_true

__all__ = ["IdentificationResult", "identification_summary", "rank_true"]
