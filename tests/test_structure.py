"""The package's shape stays readable: layered imports with no circle (import-linter's contracts in
pyproject.toml), no import of our own modules hidden inside a function, small modules and functions."""
import ast
import os
import re
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
    report = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # import-linter 2.6 colours its report even into a pipe
    assert "Layers: each imports only those below it KEPT" in report
    assert "No import circles between sibling packages or modules KEPT" in report


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


def test_every_command_loads_its_model_through_the_inference_floor():
    """chat, web, serve, eval, the agents, paragraph, export and the benchmarks get a model from
    inference/loading.py's load_model: no other module builds one for inference its own way."""
    callers = []
    for path in [*modules(), *sorted((REPO / "bench").glob("*.py"))]:
        if path == PACKAGE / "inference" / "loading.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "load_for_inference":
                callers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not callers
    users = {path.relative_to(REPO).as_posix() for path in [*modules(), *(REPO / "bench").glob("*.py")]
             if "load_model(" in path.read_text() or "load_from_arguments(" in path.read_text()}
    for command in ("minigpt/cli/chat.py", "minigpt/cli/web.py", "minigpt/cli/serve.py", "minigpt/runners/eval_recipe.py",
                    "minigpt/ops/export.py", "minigpt/ops/hf_export.py", "bench/generate.py", "bench/serve.py"):
        assert command in users, command


def test_model_code_never_imports_the_floors_above_it():
    """The model knows nothing of inference, agents, recipes or the CLI: the contract's layers say so."""
    pyproject = (REPO / "pyproject.toml").read_text()
    layers = pyproject[pyproject.index("layers = ["):pyproject.index("]", pyproject.index("layers = ["))]
    order = [line.strip().strip('",') for line in layers.splitlines()[1:] if line.strip()]
    assert order.index("minigpt.inference") < order.index("minigpt.models")  # listed top floor first
    assert order.index("minigpt.agents") < order.index("minigpt.inference")
