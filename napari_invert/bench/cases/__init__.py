"""Benchmark cases: similarity matrices, training steps, registration, end-to-end timings.

* :mod:`~napari_invert.bench.cases.volumes` — synthetic and LPBA40 volume sets;
* :mod:`~napari_invert.bench.cases.similarity` — SSIM and correlation, ours vs references;
* :mod:`~napari_invert.bench.cases.grids` — the model grids of the sample configurations;
* :mod:`~napari_invert.bench.cases.training` — segmenter and decoder training steps;
* :mod:`~napari_invert.bench.cases.registration` — ANTs presets and projected matrix costs;
* :mod:`~napari_invert.bench.cases.studies` — wall times read from study folders.
"""
