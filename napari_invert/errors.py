"""Exception types shared by the whole package.

Every error raised for bad user input names the file (or config key) and the problem in
one line, so a CLI user sees exactly what to fix.
"""

from __future__ import annotations

from pathlib import Path


class NapariInvertError(Exception):
    """Base class of all errors raised on purpose by napari-invert."""


class DataError(NapariInvertError):
    """A data file is missing, unreadable or inconsistent.

    Parameters
    ----------
    path
        The offending file (or folder).
    problem
        What is wrong with it, in a short phrase.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(NapariInvertError):
    """A configuration file or value is invalid (message names the key and the problem)."""


class CheckpointError(NapariInvertError):
    """A model checkpoint is missing, corrupt or does not fit the model it is loaded into."""
