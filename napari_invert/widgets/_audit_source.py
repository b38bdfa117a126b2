"""The Study widget's "your own segmenter" path: an audit config YAML with a ``model:`` block.

Pure Python (no napari/Qt; torch is imported by the model source when the adapter is built,
so :func:`load_audit_model` runs in a thread worker):

* the ``model:`` block -> :func:`~napari_invert.models.sources.model_adapter_from_dict`
  (relative paths against the YAML's folder) -> :func:`discover_taps`;
* :func:`tap_choices`: the chooser's entries, the roles first (``bottleneck+skips``,
  ``bottleneck``, ``levelK`` with the layer each resolves to), then every layer;
* :func:`default_attack`: the attacker's subjects, by default every cohort subject that is
  not in ``subjects.trained_on`` (nor in ``holdout``), via
  :func:`~napari_invert.audit.subjects.resolve_subjects`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from napari_invert.errors import ConfigError, DataError, NapariInvertError

#: Role entries offered first in the chooser (each must resolve on the network).
ROLE_ENTRIES = ("bottleneck+skips", "bottleneck", "skips")


@dataclass
class AuditModel:
    """An audit config's model, ready for the Attack side: adapter, taps, subjects."""

    source: Path
    adapter: Any  # napari_invert.models.sources.ModelAdapter
    discovery: Any  # napari_invert.models.sources.TapDiscovery
    choices: list[tuple[str, str]] = field(default_factory=list)
    trained_on: list[str] | None = None
    attack: list[str] | None = None
    attack_note: str = ""
    config: Any = None  # the whole AuditConfig when the YAML is one (cohort, preprocessing, subjects)
    config_note: str = ""  # why ``config`` is None
    cohort_dir: Path | None = None  # the Study widget's cohort folder, if one was chosen


def read_yaml(path: Path) -> dict[str, Any]:
    """The YAML file as a mapping (DataError when unreadable, ConfigError when not a mapping)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        raise DataError(path, f"not valid YAML ({exc})") from None
    if not isinstance(data, dict) or ("model" not in data and "kind" not in data):
        raise ConfigError(f"{path}: needs a 'model:' block (an audit config) or a 'kind:' (a model file)")
    return data


def tap_choices(discovery: Any) -> list[tuple[str, str]]:
    """``(entry, description)`` for the chooser: roles that resolve, then every layer."""
    out: list[tuple[str, str]] = []
    roles = [*ROLE_ENTRIES, *sorted(r for r in discovery.roles if r.startswith("level"))]
    for entry in roles:
        try:
            layers = discovery.resolve(entry)
        except ConfigError:
            continue
        out.append((entry, f"role: {' + '.join(layers)}"))
    for layer in discovery.layers:
        shape = "x".join(str(n) for n in layer.shape)
        out.append((layer.name, f"layer {layer.kind} {shape}"))
    return out


def cohort_subject_ids(cohort_dir: str | Path | None) -> list[str] | None:
    """Subject IDs of a prepared cohort folder (its ``cohort.json``), else ``None``."""
    if not cohort_dir:
        return None
    path = Path(cohort_dir) / "cohort.json"
    if not path.is_file():
        return None
    try:
        ids = json.loads(path.read_text()).get("subject_ids")
    except (OSError, ValueError):
        return None
    return [str(s) for s in ids] if isinstance(ids, list) else None


def default_attack(
    data: dict[str, Any], base: Path, all_ids: list[str] | None
) -> tuple[list[str] | None, list[str] | None, str]:
    """``(trained_on, attack, note)`` from the YAML's ``subjects:`` block.

    ``attack`` defaults to every cohort subject not in ``trained_on`` (nor ``holdout``);
    ``None`` when the cohort's IDs or ``trained_on`` are unknown (``note`` says why)."""
    from napari_invert.audit.subjects import resolve_subjects
    from napari_invert.audit_config import AuditSubjects, _resolve_paths, read_subject_list

    block = data.get("subjects") or {}
    try:
        spec = AuditSubjects.model_validate(_resolve_paths({"subjects": block}, base)["subjects"])
    except Exception as exc:
        raise ConfigError(f"subjects: {exc}") from None

    trained = read_subject_list(spec.trained_on, "trained_on")
    trained_on = list(trained) if isinstance(trained, list) else None
    if all_ids is None:
        note = "choose a prepared cohort folder to list the attacker's subjects"
        return trained_on, None, note
    if trained_on is None and spec.attack == "rest":
        return None, None, "trained_on is unknown: list the attacker's subjects (subjects.attack)"
    roles = resolve_subjects(spec, all_ids)
    note = f"{len(roles.attack)} of {len(all_ids)} cohort subjects, none in trained_on"
    return roles.trained_on, roles.attack, note


#: Model sources given by a file or folder alone (no YAML): chooser text -> ``model.kind``.
FILE_KINDS = {
    "TorchScript file (.pt/.ts)": "torchscript",
    "MONAI bundle folder": "bundle",
    "nnU-Net v2 trained-model folder": "nnunet",
}
FOLDER_KINDS = ("bundle", "nnunet")


def load_audit_model(
    yaml_path: str | Path, cohort_dir: str | Path | None = None, kind: str | None = None
) -> AuditModel:
    """Build the adapter of ``yaml_path``'s ``model:`` block and discover its taps.

    ``kind`` (``torchscript`` / ``bundle`` / ``nnunet``): ``yaml_path`` is the model file or
    folder itself (no subjects block: the attack set is not resolved). Slow (loads the
    network and runs one dummy forward pass): call it in a thread worker.
    """
    from napari_invert.models.sources import discover_taps, model_adapter_from_dict

    path = Path(yaml_path).expanduser()
    if kind is None:
        data = read_yaml(path)
    elif kind in FILE_KINDS.values():
        if not path.exists():
            raise DataError(path, "not found")
        data = {"model": {"kind": kind, "path": str(path.resolve())}}
    else:
        raise ConfigError(f"model.kind: choose one of {', '.join(FILE_KINDS.values())} (got {kind!r})")
    base = path.parent.resolve()
    adapter = model_adapter_from_dict(data, base=base)
    discovery = discover_taps(adapter)
    no_config = (None, "a model file, no config")
    config, config_note = _full_config(data, path, base) if kind is None else no_config
    ids = cohort_subject_ids(cohort_dir) or _config_subject_ids(config)
    trained_on, attack, note = default_attack(data, base, ids)
    return AuditModel(
        path,
        adapter,
        discovery,
        tap_choices(discovery),
        trained_on,
        attack,
        note,
        config=config,
        config_note=config_note,
        cohort_dir=Path(cohort_dir) if cohort_dir else None,
    )


def _config_subject_ids(config: Any) -> list[str] | None:
    """Subject IDs of an audit config's own cohort (its layout only), else ``None``."""
    if config is None:
        return None
    from napari_invert.audit.decoder import OwnModelCohort

    try:
        return OwnModelCohort.from_audit_config(config).subject_ids()
    except (NapariInvertError, OSError, ValueError):
        return None


def _full_config(data: dict[str, Any], path: Path, base: Path) -> tuple[Any, str]:
    """``(AuditConfig, "")`` when the YAML is a whole audit config, else ``(None, why not)``."""
    from napari_invert.audit_config import parse_audit_config

    if "cohort" not in data:
        return None, "the YAML has no cohort: block"
    try:
        return parse_audit_config(data, source=str(path), base=base), ""
    except ConfigError as exc:
        return None, str(exc)
