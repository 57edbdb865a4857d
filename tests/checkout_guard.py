"""No test may write into the checkout's data/ or output/, the folders a user's own runs fill: a test
that does leaves files behind and, under pytest-xdist, races any test that looks at those folders.

One pytest hook pair, taken in by tests/conftest.py: the run notes what data/ and output/ hold when it
starts and fails when it ends with anything new there, naming each path. It runs in the process that
started pytest (the xdist controller, not its workers), so the whole run is compared at once, whatever
ran beside what. Kept apart from conftest.py so that tests/test_checkout_guard.py can run it alone.
"""
from __future__ import annotations

from pathlib import Path

import pytest

GUARDED = ("data", "output")
_BEFORE = pytest.StashKey[set]()


def checkout_files(root: Path) -> set[str]:
    """Every path under root's data/ and output/, relative to root."""
    return {str(path.relative_to(root)) for folder in GUARDED if (root / folder).exists()
            for path in (root / folder).rglob("*")}


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not is_xdist_worker(session.config):
        session.config.stash[_BEFORE] = checkout_files(session.config.rootpath)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if is_xdist_worker(config) or _BEFORE not in config.stash:
        return
    written = sorted(checkout_files(config.rootpath) - config.stash[_BEFORE])
    if written:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        message = f"the run wrote into the checkout's {' or '.join(f'{g}/' for g in GUARDED)}: {', '.join(written)}"
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
