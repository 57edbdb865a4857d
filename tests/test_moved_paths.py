"""The import paths that moved (minigpt/common/moved.py) keep working for a release: each old path warns
and gives the very module at its new path, so a user's code that holds the old one holds the same object."""
import importlib
import sys
import warnings

import pytest

from minigpt.common.moved import MOVED, MovedModuleFinder, new_path


@pytest.fixture
def forgotten(monkeypatch):
    """Old paths dropped from sys.modules for the test (and put back after it), so that importing one runs
    the finder again, as in a fresh process."""
    for name in [name for name in sys.modules if new_path(name) is not None]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_and_is_the_new_module(old, forgotten):
    new = importlib.import_module(MOVED[old])
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {MOVED[old]}"):
        module = importlib.import_module(old)
    assert module is new


def test_a_moved_package_carries_its_modules(forgotten):
    with pytest.warns(DeprecationWarning) as caught:
        export = importlib.import_module("minigpt.tools.export")
    assert {str(warning.message).split(";")[0] for warning in caught} == {
        "minigpt.tools moved to minigpt.ops", "minigpt.tools.export moved to minigpt.ops.export"}
    assert export is importlib.import_module("minigpt.ops.export")


def test_a_path_that_did_not_move_is_left_to_the_usual_import():
    assert new_path("minigpt.ops.export") is None and new_path("minigpt.toolsmith") is None
    assert MovedModuleFinder().find_spec("minigpt.agents.loop") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        module = importlib.import_module("minigpt.agents.loop")
    assert module.__name__ == "minigpt.agents.loop"
