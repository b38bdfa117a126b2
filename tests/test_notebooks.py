"""The tutorial notebooks run end to end, and are committed without outputs.

Each notebook is executed with nbclient in a fresh kernel that runs *this* interpreter: a
temporary kernelspec pointing at ``sys.executable`` is put on ``JUPYTER_PATH``, so neither a
user-level kernel nor an installed one is needed or touched. The kernel works in
``notebooks/`` (as when a user opens the notebook there), and small parameters are injected
in a cell right after the notebook's cell tagged ``parameters`` (as papermill does), so every
study is written to a temporary folder. The committed ``.ipynb`` files are never modified.

Run time in small mode: about one to two minutes per notebook on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = (
    "01_reproduce_the_paper.ipynb",
    "02_explore_a_study.ipynb",
    "03_audit_your_own_model.ipynb",
    "04_choose_a_defence.ipynb",
)
KERNEL_NAME = "napari-invert-notebook-tests"
CELL_TIMEOUT_S = 600


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernelspec for the running interpreter, visible only to this test module."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "napari-invert (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    paths = [str(root), *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join(paths))
        yield KERNEL_NAME


@pytest.fixture(scope="module")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Study folder shared by notebook 01 (which makes it) and notebook 02 (which reads it)."""
    return tmp_path_factory.mktemp("notebook_study") / "demo_small"


def parameters_index(nb: Any) -> int:
    """Index of the (single) code cell tagged ``parameters``."""
    found = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(found) == 1, f"expected exactly one cell tagged 'parameters', found {len(found)}"
    return found[0]


def run_notebook(
    name: str, kernel: str, parameters: dict[str, Any], extra_cells: tuple[str, ...] = ()
) -> tuple[Any, float]:
    """Execute a copy of ``notebooks/<name>`` with ``parameters`` injected; returns (nb, seconds)."""
    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    source = "# injected by tests/test_notebooks.py\n" + "\n".join(
        f"{key} = {value!r}" for key, value in parameters.items()
    )
    injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(parameters_index(nb) + 1, injected)
    nb.cells.extend(nbformat.v4.new_code_cell(code) for code in extra_cells)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name=kernel,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails
    seconds = time.perf_counter() - t0
    print(f"{name}: {seconds:.0f} s")
    return nb, seconds


def outputs(nb: Any) -> list[dict[str, Any]]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def output_text(nb: Any) -> str:
    """Printed text, plain-text and Markdown renderings of every output, joined."""
    parts = []
    for out in outputs(nb):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        data = out.get("data", {})
        for mime in ("text/plain", "text/markdown", "text/html"):
            if mime in data:
                parts.append(data[mime] if isinstance(data[mime], str) else "".join(data[mime]))
    return "\n".join(parts)


def n_images(nb: Any) -> int:
    return sum("image/png" in out.get("data", {}) for out in outputs(nb))


def assert_no_errors(nb: Any) -> None:
    errors = [out for out in outputs(nb) if out.get("output_type") == "error"]
    assert not errors, "\n".join(f"{e.get('ename')}: {e.get('evalue')}" for e in errors)


# ---------------------------------------------------------------------------------------
# committed notebooks: clean, valid, parameterisable
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    path = NOTEBOOKS_DIR / name
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    parameters_index(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name}: code cell {i} has outputs (run notebooks/_strip_outputs.py)"
        assert cell.execution_count is None, f"{name}: code cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"{name}: code cell {i} has execution timing metadata"


def test_notebooks_readme_links_every_notebook() -> None:
    text = (NOTEBOOKS_DIR / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert f"({name})" in text, f"notebooks/README.md does not link {name}"


# ---------------------------------------------------------------------------------------
# execution, small mode
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_notebook_01_reproduces_the_tables_and_figures(kernel_name: str, small_study: Path) -> None:
    nb, _ = run_notebook(
        "01_reproduce_the_paper.ipynb",
        kernel_name,
        {"small": True, "study_dir": str(small_study), "device": "cpu"},
    )
    assert_no_errors(nb)
    text = output_text(nb)
    for table in ("Table 1", "Table 2", "Table 3"):
        assert table in text, f"{table} was not displayed"
    assert "Paper MCC" in text and "Paper SSIM (global)" in text  # the paper's numbers beside ours
    assert "SSIM (windowed)" in text
    assert "re-identified at top-1" in text  # the verdicts
    assert n_images(nb) >= 3  # Figures 5, 6 and 7 (plus similarity / rank / prior figures)
    assert (small_study / "evaluation" / "report.html").is_file()
    assert (small_study / "evaluation" / "tables" / "table1.md").is_file()


@pytest.mark.slow
def test_notebook_02_explores_the_study(kernel_name: str, small_study: Path) -> None:
    nb, _ = run_notebook(
        "02_explore_a_study.ipynb",
        kernel_name,
        {"study_dir": str(small_study), "open_viewer": False},
        # the compute core must not pull in napari / Qt when the viewer is not asked for
        extra_cells=("import sys\nprint('napari imported:', 'napari' in sys.modules)",),
    )
    assert_no_errors(nb)
    text = output_text(nb)
    assert "subject shown below" in text
    assert "mean rank" in text and "chance top-1" in text  # identification summary table
    assert "prior: top-1" in text  # the prior baseline
    assert "napari imported: False" in text
    assert n_images(nb) >= 3  # slices, SSIM maps, similarity matrices


@pytest.mark.gui
@pytest.mark.slow
def test_notebook_02_opens_the_napari_viewer(kernel_name: str, small_study: Path) -> None:
    pytest.importorskip("napari")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("no display: install Xvfb (pytest-xvfb then starts it) or run under xvfb-run")
    nb, _ = run_notebook(
        "02_explore_a_study.ipynb",
        kernel_name,
        {"study_dir": str(small_study), "open_viewer": True},
    )
    assert_no_errors(nb)
    text = output_text(nb)
    assert "napari layers:" in text
    assert "SSIM map" in text and "original" in text


@pytest.mark.slow
def test_notebook_03_audits_a_monai_unet(kernel_name: str, tmp_path: Path) -> None:
    nb, _ = run_notebook(
        "03_audit_your_own_model.ipynb",
        kernel_name,
        {"small": True, "work_dir": str(tmp_path / "audit"), "device": "cpu"},
    )
    assert_no_errors(nb)
    text = output_text(nb)
    assert "bottleneck=model.1.submodule.1.submodule" in text  # tap discovery found the roles
    assert "user@untrained" in text  # the untrained control was attacked too
    assert "re-identified at top-1" in text and "chance 1/12" in text
    assert "the same architecture at its initialisation" in text
    assert n_images(nb) >= 1


@pytest.mark.slow
def test_notebook_04_chooses_a_defence(kernel_name: str, tmp_path: Path) -> None:
    nb, _ = run_notebook(
        "04_choose_a_defence.ipynb",
        kernel_name,
        {"small": True, "work_dir": str(tmp_path / "defences"), "device": "cpu"},
    )
    assert_no_errors(nb)
    text = output_text(nb)
    assert "Verdict:" in text and "U-Net (skull_stripped" in text
    assert "non-dominated for re-identification" in text
    assert "training-data leakage: MIA AUC" in text  # the table, both threat models
    assert n_images(nb) >= 1  # the frontier figure
    assert (tmp_path / "defences" / "study" / "evaluation" / "frontier" / "frontier.csv").is_file()
