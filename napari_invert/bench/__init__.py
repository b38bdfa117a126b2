"""``napari-invert bench``: speed and memory benchmarks written as JSON and Markdown.

Use :func:`run_benchmarks` (``napari-invert bench [--quick] [--device ...] [--out DIR]``);
``bench/README.md`` in the repository says how to reproduce the published numbers
(``BENCHMARKS.md``).
"""

from napari_invert.bench.run import SCHEMA_VERSION, Plan, plan_for, run_benchmarks

__all__ = ["SCHEMA_VERSION", "Plan", "plan_for", "run_benchmarks"]
