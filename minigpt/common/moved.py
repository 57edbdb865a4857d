"""Import paths that moved, kept working for one release: importing an old path warns (DeprecationWarning)
and gives the module at its new path, the same module object, so a user's builder or script that reached
for `minigpt.tools.export` or `minigpt.agents.paragraph` keeps running while it is updated.

One table, read by a finder on sys.meta_path; a package that moved carries its modules with it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.3"

# old dotted path -> new dotted path (a package entry covers its submodules too)
MOVED = {
    "minigpt.tools": "minigpt.ops",
    "minigpt.conversation.chat": "minigpt.inference.chat",
    "minigpt.models.inference": "minigpt.inference.loading",
    "minigpt.agents.paragraph": "minigpt.paragraph.pipeline",
    "minigpt.agents.facts": "minigpt.paragraph.facts",
    "minigpt.agents.writers": "minigpt.paragraph.writers",
    "minigpt.agents.paragraph_tool": "minigpt.paragraph.tool",
    "minigpt.agents.paragraph_picture": "minigpt.paragraph.picture",
    "minigpt.runners.paragraph_eval": "minigpt.paragraph.evaluation",
}


def new_path(old: str) -> str | None:
    """Where the module once imported as `old` lives now, or None if it did not move."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(f"{self.old} moved to {self.new}; the old path goes in minigpt {REMOVED_IN}",
                      DeprecationWarning, stacklevel=3)
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:  # the module at the new path is already executed
        pass


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_path(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(fullname, new))


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())  # before the path finder, which would load a second copy
