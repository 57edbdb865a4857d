"""What a CI run lost to skips, said plainly: pytest hooks that tests/conftest.py takes in.

Where the CI environment variable is set (CI=true, as GitHub Actions and most CI services set it):

- a test marked `browser` (it drives chromium through chromedriver) that skips fails instead: CI
  installs the browser (.ci/run), so such a skip means the install broke and the browser test quietly
  stopped running, with the run still green;
- every other skip is listed at the very end of the run, one `skipped in CI: <test>: <reason>` line
  each, after pytest's short summary (-rs); under pytest-xdist the controller gathers every worker's
  skips there, so what a green run did not test is read in one place, by test id.

Outside CI nothing changes: a missing browser is an ordinary skip, listed by -rs.

The hooks live here, apart from conftest.py (which imports torch and the models), so that
tests/test_ci_skips.py can run them in a small pytest run of their own, under xdist too.
"""
from __future__ import annotations

import os

import pytest

MUST_RUN_IN_CI = "browser"  # the marker of the tests a CI run may not skip


def in_ci() -> bool:
    """The CI variable set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason given to pytest.skip (or a skip mark); a skip's longrepr is (file, line, "Skipped: why")."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MUST_RUN_IN_CI}: drives chromium through chromedriver; skipped where they "
                                       "are missing, but fails instead in CI (CI=true)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI, a browser test's skip (in setup or in the test) becomes its failure, with the skip's reason.
    Made where the test runs, so an xdist worker reports the failure itself."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and in_ci() and item.get_closest_marker(MUST_RUN_IN_CI):
        report.outcome = "failed"
        report.longrepr = f"in CI this browser test must run, but it skipped: {skip_reason(report)}"
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config):
    """The outermost wrapper, so its lines follow pytest's short summary: the last lines before the counts."""
    result = yield
    skipped = terminalreporter.stats.get("skipped", [])
    if in_ci() and skipped:
        terminalreporter.section(f"{len(skipped)} skipped in CI", sep="=")
        for report in skipped:
            terminalreporter.line(f"skipped in CI: {report.nodeid}: {skip_reason(report)}")
    return result
