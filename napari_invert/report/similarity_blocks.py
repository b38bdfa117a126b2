"""Similarity matrices in blocks of rows, as units of work on an executor (e.g. Ray).

:func:`similarity_matrix_blocks` computes the same ``(n_queries, n_originals)`` matrix as
:func:`~napari_invert.report.matrices.similarity_matrix` (correlation, windowed SSIM,
global SSIM inside each candidate's mask), split into blocks of :data:`ROWS_PER_BLOCK`
reconstructions; each block is one :class:`~napari_invert.execution.Unit`. Inputs are
written once as content-addressed ``.npy`` files under ``work_dir/inputs`` (the
originals and masks once, the queries per block); each block writes its rows to
``work_dir/<key>.npy`` atomically, so ``work_dir`` must be on storage every worker sees
and an interrupted computation resumes where it stopped (finished blocks are not redone).

Every block runs with one torch thread (:func:`~napari_invert.execution.call_unit`), so
the local and the Ray backend give identical numbers; they agree with the one-call
:func:`~napari_invert.report.matrices.similarity_matrix` to float32 rounding (~1e-6).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_invert._io import atomic_path

if TYPE_CHECKING:
    from napari_invert.execution import Executor, Unit

__all__ = [
    "ROWS_PER_BLOCK",
    "remove_inputs",
    "similarity_matrix_blocks",
    "similarity_rows_unit",
    "similarity_scores",
]

#: Reconstructions (rows) per unit of work.
ROWS_PER_BLOCK = 8

SIMILARITY_FUNC = "napari_invert.report.similarity_blocks:similarity_rows_unit"


def _digest(array: np.ndarray | None) -> str:
    from napari_invert.metrics.registration.common import array_digest

    return array_digest(array)


def _write_input(folder: Path, array: np.ndarray) -> str:
    """Content-addressed ``.npy`` copy of ``array`` (written once, atomically)."""
    path = folder / f"{_digest(array)}.npy"
    if not path.exists():
        with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    return str(path)


def similarity_matrix_blocks(
    metric: str,
    queries: np.ndarray,
    originals: np.ndarray,
    masks: np.ndarray | None,
    data_range: float,
    executor: Executor,
    work_dir: str | Path,
    *,
    rows_per_block: int = ROWS_PER_BLOCK,
    device: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``(len(queries), len(originals))`` similarity scores, row blocks run on ``executor``.

    Parameters
    ----------
    metric
        ``"correlation"``, ``"ssim"`` or ``"ssim_global"`` (higher = more similar).
    queries
        ``(N, X, Y, Z)`` reconstructions (or priors): the rows.
    originals
        ``(M, X, Y, Z)`` candidate originals: the columns.
    masks
        ``(M, X, Y, Z)`` bool, ``masks[j]`` scores column ``j`` (``None``: whole volume).
    data_range
        SSIM's ``L`` for every pair (ignored by correlation).
    executor
        From :func:`~napari_invert.execution.make_executor` (``local`` or ``ray``).
    work_dir
        Folder for inputs and block results (shared storage on a cluster); reused on a
        rerun with the same inputs.
    rows_per_block
        Rows per unit (>= 1).
    device
        Torch device name for the workers (``None``: CUDA when the worker has one).
    """
    if rows_per_block < 1:
        raise ValueError(f"rows_per_block must be >= 1, got {rows_per_block}")
    queries = np.asarray(queries, dtype=np.float32)
    originals = np.asarray(originals, dtype=np.float32)
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != originals.shape:
            raise ValueError(f"masks {masks.shape} do not match originals {originals.shape}")
    if queries.ndim != 4 or originals.ndim != 4 or queries.shape[1:] != originals.shape[1:]:
        raise ValueError(f"queries {queries.shape} and originals {originals.shape}: need (N, X, Y, Z) alike")
    work = Path(work_dir)
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    common = {
        "metric": metric,
        "data_range": float(data_range),
        "device": device,
        "originals": _write_input(inputs, originals),
        "masks": None if masks is None else _write_input(inputs, masks),
    }
    units: list[Unit] = []
    outs: list[Path] = []
    for start in range(0, len(queries), rows_per_block):
        block = queries[start : start + rows_per_block]
        config = {**common, "queries": _write_input(inputs, block)}
        key = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=16).hexdigest()
        out = work / f"{metric}_{key}.npy"
        outs.append(out)
        if not out.exists():
            units.append(_unit(f"similarity:{metric}:rows{start}-{start + len(block) - 1}", config, out))
    if units:
        executor.map(units, progress=progress, desc=f"{metric} row blocks ({executor.name})")
    return np.concatenate([np.load(p) for p in outs], axis=0) if outs else np.zeros((0, len(originals)))


def similarity_scores(
    metric: str,
    queries: np.ndarray,
    originals: np.ndarray,
    masks: np.ndarray | None,
    data_range: float,
    device: Any,
    executor: Executor | None = None,
    work_dir: str | Path | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``(len(queries), len(originals))`` scores: in this process without ``executor``
    (:func:`~napari_invert.report.matrices.similarity_matrix` on ``device``), else as row
    blocks on it (:func:`similarity_matrix_blocks` in ``work_dir``; ``device`` ``"auto"``
    lets each worker take its own GPU when it has one)."""
    from napari_invert.report.matrices import similarity_matrix

    if executor is None:
        return similarity_matrix(metric, queries, originals, masks, data_range, device)
    if work_dir is None:
        raise ValueError("similarity_scores on an executor needs a work_dir (results land there)")
    name = None if device is None or str(device) == "auto" else str(device)
    return similarity_matrix_blocks(
        metric, queries, originals, masks, data_range, executor, work_dir, device=name, progress=progress
    )


def remove_inputs(work_dir: str | Path) -> None:
    """Delete the input copies under ``work_dir/inputs`` (the block results stay): the
    originals alone are ``N x X x Y x Z`` float32 (0.8 GB for LPBA40 at 1 mm)."""
    import shutil

    shutil.rmtree(Path(work_dir) / "inputs", ignore_errors=True)


def _unit(key: str, config: dict[str, Any], out: Path) -> Unit:
    from napari_invert.execution import Unit

    return Unit(key=key, func=SIMILARITY_FUNC, config=config, paths={"out": str(out)})


def similarity_rows_unit(config: dict[str, Any], paths: dict[str, str]) -> dict[str, Any]:
    """Unit of work: one block of rows of a similarity matrix, written to ``paths["out"]``.

    ``config``: ``metric``, ``data_range``, ``device`` and the ``.npy`` paths ``queries``
    (``(n, X, Y, Z)``), ``originals`` (``(M, X, Y, Z)``), ``masks`` (or ``None``).
    Returns ``{"rows": n}``.
    """
    from napari_invert.report.matrices import save_npy, similarity_matrix

    queries = np.load(config["queries"])
    originals = np.load(config["originals"], mmap_mode="r")
    masks = None if config["masks"] is None else np.load(config["masks"], mmap_mode="r")
    rows = similarity_matrix(
        config["metric"], queries, originals, masks, config["data_range"], config.get("device")
    )
    save_npy(paths["out"], np.asarray(rows, dtype=np.float64))
    return {"rows": len(rows)}
