"""The headless core never imports napari, Qt or magicgui (only napari_invert.widgets may)."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = ["data", "models", "attack", "metrics", "identify", "membership", "study", "report", "config", "cli"]

SCRIPT = f"""
import importlib, importlib.util, json, pkgutil, sys
import napari_invert
imported = ["napari_invert"]
for name in {CORE!r}:
    full = "napari_invert." + name
    if importlib.util.find_spec(full) is None:
        continue  # optional module (e.g. cli) not written yet
    mod = importlib.import_module(full)
    imported.append(full)
    for info in pkgutil.walk_packages(getattr(mod, "__path__", []), full + "."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            importlib.import_module(info.name)
            imported.append(info.name)
bad = sorted(
    m for m in sys.modules
    if (m.split(".")[0].startswith("napari") and m.split(".")[0] != "napari_invert")
    or m.split(".")[0] in ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui")
)
print(json.dumps({{"imported": imported, "bad": bad}}))
"""


def test_core_imports_no_gui_modules() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "napari_invert.data.prepare" in result["imported"]
    assert "napari_invert.study.layout" in result["imported"]
    assert result["bad"] == [], f"GUI modules imported by the core: {result['bad']}"
