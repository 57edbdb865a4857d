"""The suite's skips in CI (tests/ci_skips.py): a skipped browser test fails there, and every other skip
is listed by test id and reason as the run's last lines, also under pytest-xdist. Checked on a small
generated test file run by pytest of its own, with the hooks taken in as tests/conftest.py takes them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

INNER_TESTS = '''
import pytest


@pytest.mark.browser
def test_in_chromium():
    pytest.skip("no chromium / chromedriver on PATH")


def test_on_a_gpu():
    pytest.skip("no GPU here")


@pytest.mark.skipif(True, reason="needs bitsandbytes")
def test_quantised():
    pass


def test_plain():
    pass
'''


def run_inner_pytest(folder: Path, ci: bool, *args: str) -> subprocess.CompletedProcess:
    """pytest on the generated file, in a clean environment but for CI (and none of this run's xdist settings)."""
    (folder / "conftest.py").write_text(
        "from ci_skips import pytest_configure, pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401\n")
    (folder / "test_inner.py").write_text(INNER_TESTS)
    env = {key: value for key, value in os.environ.items()
           if key != "CI" and not key.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(TESTS)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args, "test_inner.py"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_in_ci_a_browser_skip_fails_and_the_other_skips_end_the_run(tmp_path, workers):
    result = run_inner_pytest(tmp_path, True, *workers)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed" in out and " test_in_chromium " in out.partition("= FAILURES =")[2]
    assert "in CI this browser test must run, but it skipped: no chromium / chromedriver on PATH" in out
    lines = out.rstrip().splitlines()
    listed = [line for line in lines if line.startswith("skipped in CI:")]
    assert sorted(listed) == ["skipped in CI: test_inner.py::test_on_a_gpu: no GPU here",
                              "skipped in CI: test_inner.py::test_quantised: needs bitsandbytes"], out
    # the last lines of the run: after pytest's short summary, followed only by the counts
    assert lines.index(listed[0]) > max(i for i, line in enumerate(lines) if "short test summary info" in line)
    assert lines[-3:-1] == listed, out
    assert "1 failed, 1 passed, 2 skipped" in lines[-1]


def test_outside_ci_a_missing_browser_is_an_ordinary_skip(tmp_path):
    result = run_inner_pytest(tmp_path, False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 3 skipped" in result.stdout and "skipped in CI" not in result.stdout
    assert "SKIPPED [1] test_inner.py:7: no chromium / chromedriver on PATH" in result.stdout  # pytest's -rs
