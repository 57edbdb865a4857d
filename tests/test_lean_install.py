"""The core install (`pip install -e .`, no extras) trains, chats and evaluates; each command of an extra names
the extra it lacks in one line; every library the core imports is one it declares.

The fast tests hide the extras' libraries from a child process (None in sys.modules: their imports fail as if
they were not installed). The slow test makes a real virtual environment with the core alone: torch and
torchvision, whose wheels are gigabytes, are lent to it from this environment, and pip installs the rest
from pyproject.toml's core dependencies.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from conftest import REPO
from minigpt.cli.main import COMMANDS

EXTRAS_LIBRARIES = ["cv2", "skimage", "sklearn", "scipy", "jsonschema", "mcp", "fastapi", "starlette", "uvicorn",
                    "gradio", "matplotlib", "wandb", "tensorboard", "lmms_eval", "bitsandbytes", "deepspeed",
                    "pycocoevalcap", "datasets", "pyarrow", "gdown", "openai", "selenium"]
HIDE_EXTRAS = f"import sys\nfor name in {EXTRAS_LIBRARIES!r}:\n    sys.modules[name] = None\n"


def without_extras(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_EXTRAS + code], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


EXTRA_COMMANDS = {
    "serve": (["serve", "--cfg-path", "eval_configs/tiny_eval.yaml", "--port", "8000"], "serve"),
    "mcp": (["mcp", "--cfg-path", "eval_configs/tiny_eval.yaml"], "agents"),
    "agent": (["agent", "--template", "image_to_paragraph", "--image", "README.md"], "agents"),
    "paragraph": (["paragraph", "--image", "README.md", "--stages", "segments"], "agents"),
    "web": (["web", "--cfg-path", "eval_configs/tiny_eval.yaml"], "web"),
}
RUN_COMMANDS = """
import contextlib, io, json
from minigpt.cli.main import main
outcomes = {}
for name, args in COMMANDS.items():
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(args)
        except SystemExit as exit:
            code = exit.code
    outcomes[name] = [code, stdout.getvalue(), stderr.getvalue()]
print(json.dumps(outcomes))
"""


@pytest.fixture(scope="module")
def outcomes() -> dict[str, list]:
    """Each command run once in a child process without the extras -> [exit code, stdout, stderr]."""
    commands = {name: args for name, (args, _) in EXTRA_COMMANDS.items()} | {"help": ["--help"]}
    result = without_extras(f"COMMANDS = {commands!r}\n" + RUN_COMMANDS)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", EXTRA_COMMANDS)
def test_a_command_of_an_extra_names_it_in_one_line(outcomes, name):
    code, _, stderr = outcomes[name]
    extra = EXTRA_COMMANDS[name][1]
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"minigpt {name}: error:") and f"pip install 'minigpt-lab[{extra}]'" in lines[0]


def test_every_command_is_listed_without_the_extras(outcomes):
    code, stdout, stderr = outcomes["help"]
    assert code == 0, stderr[-3000:]
    assert all(re.search(rf"^\s+{name}\s", stdout, re.M) for name in COMMANDS), stdout


# Imported where a setting asks for it, with its own message when missing (paragraph evaluation's encoder).
OPTIONAL_WITHOUT_EXTRA = {"sentence_transformers"}


def requirement_names(lines) -> set[str]:
    return {re.split(r"[<>=!~; \[]", line)[0].lower().replace("_", "-") for line in lines}


def declared() -> tuple[set[str], set[str]]:
    """The distributions pyproject.toml declares: (core, extras'), names normalised."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {line for lines in project["optional-dependencies"].values() for line in lines}
    return requirement_names(project["dependencies"]), requirement_names(extras)


def imported_libraries(module_file: Path) -> set[str]:
    """Top-level names a module imports (anywhere in it), less the standard library and our own."""
    names = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("minigpt", "__future__")}


def test_every_library_the_core_imports_is_a_declared_core_dependency():
    """The modules `minigpt train`, `chat` and `eval` load without the extras, and what each imports."""
    result = without_extras(
        "from minigpt.cli.main import build_parser\nbuild_parser()\n"
        "import minigpt.runners.train_recipe, minigpt.runners.eval_recipe, minigpt.inference.chat\n"
        "import json\nprint(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()\n"
        "    if n.startswith('minigpt') and getattr(m, '__file__', None))))")
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = [Path(path) for path in json.loads(result.stdout)]
    assert len(loaded) > 100
    distributions = importlib.metadata.packages_distributions()
    core, extras = declared()
    undeclared, unguarded = {}, {}
    for path in loaded:
        for name in imported_libraries(path) - OPTIONAL_WITHOUT_EXTRA:
            owners = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
            if not owners & (core | extras):
                undeclared.setdefault(name, []).append(str(path.relative_to(REPO)))
            elif not owners & core and name not in EXTRAS_LIBRARIES:
                unguarded.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert not undeclared, f"imported by the core but declared nowhere in pyproject.toml: {undeclared}"
    # an extra's library the core imports must be among those the child process hid (and it still loaded)
    assert set(unguarded) <= {"accelerate"}, unguarded  # a device map: loading.py checks for it first


def lend_torch(into: Path) -> Path:
    """A folder of links to torch, torchvision and everything they require, from this environment."""
    folder = into / "lent"
    folder.mkdir()
    todo, seen = ["torch", "torchvision"], set()
    while todo:
        name = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        todo += [re.split(r"[<>=!~; \[(]", r)[0] for r in dist.requires or [] if "extra ==" not in r]
        tops = {Path(f).parts[0] for f in dist.files or [] if not Path(f).parts[0].startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)
    return folder


@pytest.mark.slow
def test_the_core_install_trains_chats_evaluates_and_names_missing_extras(tmp_path):
    env_dir = tmp_path / "core"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin/python"
    site = next((env_dir / "lib").glob("python3.*/site-packages"))
    (site / "lent_torch.pth").write_text(str(lend_torch(tmp_path)) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO)], capture_output=True,
                             text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    for library in ("fastapi", "cv2", "sklearn", "jsonschema", "mcp", "gradio", "wandb", "tensorboard"):
        assert subprocess.run([str(python), "-c", f"import {library}"], capture_output=True).returncode != 0, library

    data, out = tmp_path / "shapes", tmp_path / "run"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=REPO, timeout=900)

    generated = run("dataset/synthetic_shapes.py", "--out", str(data), "--seed", "0", "--stage1-images", "0",
                    "--train-images", "16", "--test-images", "4")
    assert generated.returncode == 0, generated.stderr[-3000:]
    trained = run("-m", "minigpt", "train", "--cfg-path", "train_configs/tiny_stage2.yaml", "--options",
                  f"model.tokenizer={data}/tokenizer", "model.ckpt=null", f"run.output_dir={out}",
                  "run.max_epoch=1", "run.iters_per_epoch=1", "run.batch_size_train=4",
                  f"datasets.sharegpt4v.build_info.ann_path={data}/train.json",
                  f"datasets.sharegpt4v.build_info.image_path={data}/images", "datasets.sharegpt4v.batch_size=4")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (out / "checkpoint_0000001").exists() or list(out.glob("checkpoint_*")), trained.stdout[-2000:]
    image = next((data / "images").iterdir())
    chatted = run("-m", "minigpt", "chat", "--cfg-path", "eval_configs/tiny_eval.yaml", "--image", str(image),
                  "--prompt", "Which colors do you see?", "--options", f"model.tokenizer={data}/tokenizer",
                  f"model.ckpt={out}", "--save-dir", str(tmp_path / "demo"))
    assert chatted.returncode == 0 and chatted.stdout.strip(), chatted.stderr[-3000:]
    evaluated = run("-m", "minigpt", "eval", "--cfg-path", "eval_configs/tiny_eval.yaml", "--options",
                    f"model.tokenizer={data}/tokenizer", f"model.ckpt={out}", f"run.output_dir={tmp_path}/eval",
                    f"evaluation_datasets.shapes_test.build_info.ann_path={data}/test.json",
                    f"evaluation_datasets.shapes_test.build_info.image_path={data}/images")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["answered"] == 8  # 4 images, 2 questions each
    refused = run("-m", "minigpt", "agent", "--template", "image_to_paragraph", "--image", str(image))
    assert refused.returncode == 2 and "pip install 'minigpt-lab[agents]'" in refused.stderr, refused.stderr[-3000:]
