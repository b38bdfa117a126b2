"""End-to-end wall times, read from finished study folders (never run by ``bench``).

``napari-invert demo`` and ``napari-invert study sample_configs/quick_cpu.yaml`` take
minutes to an hour, so the benchmark only *reads* what a study run recorded:

* ``manifest.json``: ``last_run_seconds`` (wall time of the most recent ``study`` run —
  of the resumed part only, if that run resumed an interrupted one) and each finished
  step's ``seconds`` (segmenter training, attack = decoder training + reconstruction);
* ``evaluation/summary.json``: ``seconds`` of the last ``evaluate`` (``demo`` runs it
  right after the study);
* ``config.yaml`` (its ``name`` says which configuration it was) and ``cohort.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["END_TO_END_CONFIGS", "end_to_end", "read_study"]

#: Configurations whose end-to-end time the report always lists.
END_TO_END_CONFIGS: dict[str, str] = {
    "demo": "napari-invert demo",
    "quick_cpu": "napari-invert study sample_configs/quick_cpu.yaml --evaluate",
}

NOT_MEASURED = "not measured in this run"


def read_study(path: Path) -> dict[str, Any]:
    """Timings recorded in one study folder (see the module docstring).

    Returns ``path``, ``name`` (config name or folder name), ``last_run_seconds``,
    ``steps`` (``{step_key: seconds}``), ``steps_total_s`` (summed over parallel fold jobs,
    so it can exceed the wall time), ``by_kind`` (seconds summed by step kind:
    ``segmenter``, ``attack``), ``evaluation_seconds``, ``shape``,
    ``steps_before_last_run`` / ``seconds_before_last_run`` (steps an earlier, interrupted
    run finished: not part of ``last_run_seconds``); or ``path`` and ``error`` when the
    folder has no readable manifest.
    """
    import yaml

    from napari_invert._io import read_json
    from napari_invert.errors import DataError
    from napari_invert.study.layout import StudyFolder

    folder = StudyFolder(Path(path))
    out: dict[str, Any] = {"path": str(folder.root)}
    if not folder.manifest_path.is_file():
        out["error"] = f"no manifest.json in {folder.root}"
        return out
    try:
        manifest = read_json(folder.manifest_path)
    except DataError as exc:
        out["error"] = str(exc)
        return out
    name = folder.root.name
    if folder.config_path.is_file():
        try:
            cfg = yaml.safe_load(folder.config_path.read_text(encoding="utf-8")) or {}
            name = str(cfg.get("name") or name)
        except (OSError, yaml.YAMLError):
            pass
    steps = {
        key: float(info["seconds"])
        for key, info in (manifest.get("steps") or {}).items()
        if isinstance(info, dict) and isinstance(info.get("seconds"), (int, float))
    }
    by_kind: dict[str, float] = {}
    for key, sec in steps.items():
        kind = key.split(":", 1)[0]
        by_kind[kind] = by_kind.get(kind, 0.0) + sec
    evaluation = None
    summary = folder.evaluation.summary_json
    if summary.is_file():
        try:
            evaluation = float(read_json(summary).get("seconds"))
        except (DataError, TypeError, ValueError, AttributeError):
            evaluation = None
    shape = None
    if folder.cohort_path.is_file():
        try:
            shape = read_json(folder.cohort_path).get("shape")
        except (DataError, AttributeError):
            shape = None
    last = manifest.get("last_run_seconds")
    earlier = _steps_before_last_run(manifest.get("steps") or {}, last)
    out.update(
        {
            "name": name,
            "last_run_seconds": float(last) if isinstance(last, (int, float)) else None,
            "steps": steps,
            "n_steps": len(manifest.get("steps") or {}),
            "steps_total_s": sum(steps.values()),
            "by_kind": by_kind,
            "evaluation_seconds": evaluation,
            "shape": shape,
            "steps_before_last_run": earlier,
            "seconds_before_last_run": sum(steps.get(k, 0.0) for k in earlier),
        }
    )
    return out


def _steps_before_last_run(steps: dict[str, Any], last: Any) -> list[str]:
    """Steps that finished before the last ``study`` run began (it resumed them).

    The last run is taken to end at the latest step's finish time and to have lasted
    ``last_run_seconds``; a step finished more than 5 s before that start was done by an
    earlier run, so ``last_run_seconds`` does not include it.
    """
    import datetime as dt

    if not isinstance(last, (int, float)):
        return []
    finished: dict[str, dt.datetime] = {}
    for key, info in steps.items():
        try:
            finished[key] = dt.datetime.fromisoformat(str(info["finished"]))
        except (KeyError, TypeError, ValueError):
            continue
    if not finished:
        return []
    start = max(finished.values()) - dt.timedelta(seconds=float(last) + 5.0)
    return sorted(k for k, t in finished.items() if t < start)


def end_to_end(studies: list[Path] | None) -> list[dict[str, Any]]:
    """One entry per configuration in :data:`END_TO_END_CONFIGS` (``measured: False`` and
    ``status: "not measured in this run"`` unless a given study folder has that config
    name) plus one per other given study folder."""
    read = [read_study(p) for p in (studies or [])]
    out: list[dict[str, Any]] = []
    used: set[int] = set()
    for name, command in END_TO_END_CONFIGS.items():
        match = next(
            (k for k, s in enumerate(read) if s.get("name") == name and "error" not in s and k not in used),
            None,
        )
        if match is None:
            out.append({"config": name, "command": command, "measured": False, "status": NOT_MEASURED})
            continue
        used.add(match)
        out.append({"config": name, "command": command, "measured": True, "status": "read", **read[match]})
    for k, s in enumerate(read):
        if k in used:
            continue
        measured = "error" not in s
        out.append(
            {
                "config": s.get("name"),
                "command": None,
                "measured": measured,
                "status": "read" if measured else s["error"],
                **s,
            }
        )
    return out
