"""The install files agree: torch is pinned in torch-pins.txt alone, which the quick start's setup script
and the conda environment both install from, and the pin satisfies pyproject.toml's floor; Python's
floor in pyproject.toml is the version they install and the README names; and every floor resolves there."""
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO

INSTALL_FILES = ("scripts/setup.sh", "environment.yml", ".ci/run", "README.md", "pyproject.toml")


def test_torch_is_pinned_in_one_file_that_both_installs_read():
    pins = {Requirement(line).name: Requirement(line) for line in (REPO / "torch-pins.txt").read_text().splitlines()
            if line and not line.startswith("#")}
    assert set(pins) == {"torch", "torchvision"} and all(str(r.specifier).startswith("==") for r in pins.values())
    for name in INSTALL_FILES:
        assert not re.search(r"torch(vision)?==", (REPO / name).read_text()), f"{name} pins torch itself"
    assert "-r torch-pins.txt" in (REPO / "scripts/setup.sh").read_text()
    assert "-r torch-pins.txt" in (REPO / "environment.yml").read_text()
    floors = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    torch_floor = next(r for r in floors if r.name == "torch")
    assert torch_floor.specifier.contains(str(pins["torch"].specifier).removeprefix("=="))


def test_the_python_floor_is_the_tested_version():
    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    version = floor.removeprefix(">=")
    assert f"python={version}" in (REPO / "environment.yml").read_text()
    assert f"python{version}" in (REPO / "scripts/setup.sh").read_text()
    assert f"Python {version}" in (REPO / "README.md").read_text()


@pytest.mark.slow
def test_every_dependency_at_its_floor_resolves_on_the_oldest_supported_python(tmp_path):
    """Each direct dependency (core and every extra) at its lowest allowed release, on the floor Python: the
    floors are releases that exist and fit together there."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python = project["requires-python"].removeprefix(">=")
    pinned_file = tmp_path / "floors.txt"
    result = subprocess.run([sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--all-extras",
                             "--resolution", "lowest-direct", "--python-version", python, "--no-header", "-q",
                             "-o", str(pinned_file)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    pinned = dict(line.split("==") for line in pinned_file.read_text().splitlines() if "==" in line)
    for requirement in map(Requirement, project["dependencies"]):
        floor = next((s.version for s in requirement.specifier if s.operator == ">="), None)
        if floor is not None:  # lowest-direct takes the floor itself where that release exists
            assert Version(pinned[canonicalize_name(requirement.name)]) >= Version(floor), requirement
    assert pinned["torch"] == "2.6.0"
