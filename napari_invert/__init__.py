"""napari-invert: audit 3D segmentation networks for model-inversion leakage.

The package is split by concern (data -> models -> attack -> metrics -> identify ->
study -> report -> widgets). Everything except :mod:`napari_invert.widgets` is the
headless *core*: it never imports napari, Qt or magicgui, so it runs in CI, on
clusters and in notebooks.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
