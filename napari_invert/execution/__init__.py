"""One executor interface for independent units of work, with a local and a Ray backend.

A :class:`Unit` names a plain module-level function ``func(config, paths) -> result`` and
its arguments: ``config`` a JSON-ready dict, ``paths`` a dict of strings. Units write their
results into the study folder themselves (shared storage: a local disk, or a file system
every cluster node mounts); what they return is small (a summary dict). Nothing else is
shipped between processes, so a unit runs the same in a spawned local process and on a
Ray worker on another machine.

Backends (:func:`make_executor`):

* ``local`` (default, no extra dependency): ``jobs`` spawned processes
  (:class:`~napari_invert.execution.local.LocalExecutor`); ``jobs=1`` runs in this process.
* ``ray`` (``pip install 'napari-invert[cluster]'``): every unit is a Ray task with the
  unit's CPU and GPU resources (fractional GPUs let several small 3D trainings share one
  device) on a local Ray instance or the cluster at ``address``
  (:class:`~napari_invert.execution.ray_backend.RayExecutor`).

Both show one progress bar of finished units on the driver. A failed unit raises
:class:`UnitFailed` after the other running units finish; everything already written stays
(rerun to resume: the units skip what the study manifest records as finished).
"""

from __future__ import annotations

from napari_invert.execution.base import Executor, Unit, UnitFailed, call_unit, make_executor

__all__ = ["Executor", "Unit", "UnitFailed", "call_unit", "make_executor"]
