"""Data layer: NIfTI IO, geometry, intensity, label tables, cohorts, preparation.

Headless (no napari / Qt). The demo cohort lives in :mod:`napari_invert.data.demo` and is
imported from there (it is not re-exported here).
"""

from napari_invert.data.cohort import Cohort, Problem, Subject, SubjectVolumes
from napari_invert.data.geometry import (
    GridRecord,
    NativeGrid,
    crop_or_pad,
    reorient_from_ras,
    reorient_to_ras,
    resample,
)
from napari_invert.data.intensity import (
    NyulStandardizer,
    n4_correct,
    percentile_scale,
    skull_strip,
    zscore,
)
from napari_invert.data.labels import LPBA40_NAMES, LabelTable
from napari_invert.data.nifti import Volume, load_nifti, read_header, save_nifti
from napari_invert.data.prepare import PreparedCohort, PreparedSubject, prepare_cohort
from napari_invert.data.summary import cohort_summary, format_cohort_summary

__all__ = [
    "LPBA40_NAMES",
    "Cohort",
    "GridRecord",
    "LabelTable",
    "NativeGrid",
    "NyulStandardizer",
    "PreparedCohort",
    "PreparedSubject",
    "Problem",
    "Subject",
    "SubjectVolumes",
    "Volume",
    "cohort_summary",
    "crop_or_pad",
    "format_cohort_summary",
    "load_nifti",
    "n4_correct",
    "percentile_scale",
    "prepare_cohort",
    "read_header",
    "reorient_from_ras",
    "reorient_to_ras",
    "resample",
    "save_nifti",
    "skull_strip",
    "zscore",
]
