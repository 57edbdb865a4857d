"""A command starts by importing what it needs: `minigpt train` builds its own parser alone, and an extra's
library that a core module names (scikit-learn for the paragraph metrics, OpenCV for the face check) is
imported where it is first used. Each costs seconds of start-up in every run, rank and evaluation."""
import subprocess
import sys

from conftest import REPO
from minigpt.cli.main import COMMANDS

EXTRAS_LIBRARIES = ("sklearn", "cv2", "skimage", "scipy.ndimage", "jsonschema", "gradio", "fastapi", "mcp")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running code."""
    result = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split())


def test_a_command_imports_its_own_module_and_no_extra_library():
    loaded = modules_after("from minigpt.cli.main import main\n"
                           "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass")
    commands = {f"minigpt.cli.{module}" for module, _ in COMMANDS.values()}
    own = modules_after("import minigpt.cli.train")  # the command's module and what it imports itself
    assert "minigpt.cli.train" in loaded and commands & loaded == commands & own != commands
    assert "minigpt.runners" in loaded and "minigpt.evaluation.paragraph_metrics" in loaded  # names sklearn
    assert not loaded & set(EXTRAS_LIBRARIES), loaded & set(EXTRAS_LIBRARIES)


def test_the_full_listing_still_imports_every_command():
    loaded = modules_after("from minigpt.cli.main import build_parser\nbuild_parser()")
    assert {f"minigpt.cli.{module}" for module, _ in COMMANDS.values()} <= loaded


def test_an_optional_library_is_imported_where_first_used():
    loaded = modules_after(
        "from minigpt.common.errors import optional_module\n"
        "assert optional_module('no_such_library_anywhere') is None\n"
        "tabnanny_module = optional_module('tabnanny')\n"
        "import sys\nassert 'tabnanny' not in sys.modules\n"
        "assert callable(tabnanny_module.check) and 'tabnanny' in sys.modules\n"
        "assert tabnanny_module.check is sys.modules['tabnanny'].check")
    assert "tabnanny" in loaded
