"""Strip outputs from the tutorial notebooks before committing them.

Usage (from the repository root)::

    python notebooks/_strip_outputs.py            # strip every notebooks/*.ipynb in place
    python notebooks/_strip_outputs.py --check    # only report; exit 1 if any has outputs
    python notebooks/_strip_outputs.py PATH ...   # particular notebooks

Clears every code cell's outputs and execution count, and the per-cell metadata that
Jupyter adds when running (``execution`` timings, ``collapsed``, ``scrolled``); cell tags
(e.g. ``parameters``) are kept. A file is rewritten only when something changed.
``tests/test_notebooks.py`` checks that the committed notebooks are stripped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

RUNTIME_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def strip(nb: nbformat.NotebookNode) -> bool:
    """Strip ``nb`` in place; return True when anything was removed."""
    changed = False
    for cell in nb.cells:
        for key in RUNTIME_METADATA:
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs = []
            cell.execution_count = None
            changed = True
    if "widgets" in nb.metadata:
        del nb.metadata["widgets"]
        changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if any needs stripping")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(Path(__file__).resolve().parent.glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path)
            if not args.check:
                nbformat.write(nb, path)
    for path in dirty:
        print(f"{'needs stripping' if args.check else 'stripped'}: {path}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
