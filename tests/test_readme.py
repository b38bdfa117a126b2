"""The README's code example runs as written (a documentation test)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_audit_your_own_network_example_runs():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Audit your own network") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    recon = namespace["reconstructions"]
    assert len(recon) == 2 and recon[0].shape == (32, 32, 32)
    shapes = [entry["shape"] for entry in namespace["tapper"].describe()]
    assert all(shape is not None for shape in shapes)


def test_readme_states_the_two_setup_commands_that_ci_runs():
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "napari-invert demo" in text and "python -m pytest" in text
    assert "pip install -q torch==2.13.0 -e '.[all]'" in ci and "python -m pytest" in ci
