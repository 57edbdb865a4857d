"""The package's shape stays readable: layered imports with no circle (import-linter's contracts in
pyproject.toml), no import of our own modules hidden inside a function, small modules and functions."""
import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "minigpt"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Layers: each imports only those below it KEPT" in result.stdout
    assert "No import circles between sibling packages or modules KEPT" in result.stdout


def test_no_function_imports_our_own_modules():
    """Such an import only hides a circle; libraries (optional extras, peft) may still load on first use."""
    hidden = []
    for path in modules():
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minigpt"):
                        hidden.append(f"{path.relative_to(REPO)}:{node.lineno} {node.module}")
                    if isinstance(node, ast.Import) and any(a.name.startswith("minigpt") for a in node.names):
                        hidden.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not hidden


def test_modules_and_functions_stay_small():
    too_long = []
    for path in modules():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long
