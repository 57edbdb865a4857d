"""Errors in what a user gave us (a config, a data file, a checkpoint), as opposed to bugs.

The command line prints an InputError as its one-line message and exits with 2; any other exception
is a bug and keeps its traceback. Each message names the file and, where there is one, the record and
the field.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

DISTRIBUTION = "minigpt-lab"  # the name to pip install (the import name is minigpt)


class InputError(ValueError):
    """Bad input from the user: the message says which file, record or key, and what would be right."""


class ConfigError(InputError):
    """A config problem, always naming the file (or --options) and the dotted key."""

    def __init__(self, source: str, key: str, problem: str):
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


class InputFileNotFoundError(InputError, FileNotFoundError):
    """A file a config names, or one a folder it names should hold, is not there."""


class CheckpointError(InputError):
    """A weights or checkpoint file that cannot be read or does not fit the model."""


def install_hint(module: str, extra: str) -> str:
    """What to say when an optional dependency is missing: the extra that brings it."""
    return f"needs {module}, which is not installed: pip install '{DISTRIBUTION}[{extra}]'"


class MissingExtraError(InputError, ImportError):
    """An optional dependency a setting needs is not installed; the message names the extra to install."""

    def __init__(self, needed_by: str, module: str, extra: str):
        super().__init__(f"{needed_by} {install_hint(module, extra)}")

    def refuse(self, *args) -> None:
        """Raise this error: a command that cannot run without the extra runs this instead."""
        raise self


def optional_module(name: str) -> ModuleType | None:
    """A library of an extra, or None where it is not installed: modules the core install also loads keep
    working without it, and the one function that needs it raises MissingExtraError. The library is
    imported where first used, so that the core's commands do not pay for it (scikit-learn alone takes
    most of a second)."""
    if importlib.util.find_spec(name.split(".")[0]) is None:
        return None
    return ImportedOnUse(name)


class ImportedOnUse(ModuleType):
    """A module that is imported the first time one of its attributes is read."""

    def __getattr__(self, attribute: str):
        module = importlib.import_module(self.__name__)
        self.__dict__.update(vars(module))
        return getattr(module, attribute)


class FetchError(InputError):
    """A file could not be fetched or found (common/fetch.py, common/gdrive.py): one line naming what, and
    (for a setting) which setting."""

    def __init__(self, problem: str, setting: str | None = None):
        problem = " ".join(problem.split())  # one line, whatever the library said
        super().__init__(f"{setting}: {problem}" if setting else problem)
        self.problem, self.setting = problem, setting
