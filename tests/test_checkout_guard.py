"""tests/checkout_guard.py: a run fails, naming the paths, when a test wrote into the checkout's data/ or
output/, also when the write happened in an xdist worker; what was there before the run does not count.
Checked on generated tests run by pytest of their own in a folder standing in for the checkout."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

INNER_TESTS = '''
from pathlib import Path


def test_writes_a_demo_log():
    Path("output/demo").mkdir(parents=True, exist_ok=True)
    Path("output/demo/chat.log").write_text("a warning")


def test_reads_data(tmp_path):
    assert Path("data/shapes/train.json").read_text() == "[]"
'''


def run_inner_pytest(folder: Path, tests: str, *args: str) -> subprocess.CompletedProcess:
    (folder / "conftest.py").write_text("from checkout_guard import pytest_sessionfinish, pytest_sessionstart  # noqa\n")
    (folder / "test_inner.py").write_text(tests)
    (folder / "data" / "shapes").mkdir(parents=True)
    (folder / "data" / "shapes" / "train.json").write_text("[]")  # there before the run: not the run's doing
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(TESTS)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, "test_inner.py"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_run_that_wrote_into_output_fails_naming_the_files(tmp_path, workers):
    result = run_inner_pytest(tmp_path, INNER_TESTS, *workers)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 passed" in result.stdout  # every test passed: the run itself is what fails
    assert ("the run wrote into the checkout's data/ or output/: output/demo, output/demo/chat.log"
            in result.stdout), result.stdout


def test_a_run_that_only_reads_the_checkout_passes(tmp_path):
    result = run_inner_pytest(tmp_path, INNER_TESTS.replace('"output/demo', '"elsewhere/demo'))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote into the checkout" not in result.stdout
