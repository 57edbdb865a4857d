"""The commands the documents show keep working: README.md, docs/*.md and dataset/README.md.

Every command line in a fenced shell block (```bash, ```console, ``` without a language) is read, line
continuations joined, and checked by what it runs:
- `minigpt <sub> ...`, `python -m minigpt <sub> ...`, `torchrun ... -m minigpt <sub> ...`: `<sub> --help`
  exits 0, and lists every `--option` the line uses;
- `python demo.py|demo_web.py|eval.py|serve.py|train.py ...`, `torchrun ... train.py ...`,
  `deepspeed ... train.py ...`, `python dataset/X.py ...`, `python -m bench.X ...`: the script or module exists,
  its `--help` exits 0 and lists every `--option` used;
- `--cfg-path X`: X is a file (from the repository root) or the name of a shipped config;
- `bash X`: the script exists; config paths given anywhere in the line (`train_configs/...`) exist;
- `pip install '.[extra]'`: the extras exist in pyproject.toml.
Inline code spans that hold a whole command (`minigpt export --adapter NAME`) are checked the same way,
except for `--cfg-path`, which prose may fill with a placeholder.

Importing minigpt takes seconds, so the `--help` runs share one child process: each is run there as
`python -m` or `python script.py` would run it (runpy), with its exit status and output recorded.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import shlex
import tempfile
from pathlib import Path

import pytest

from conftest import REPO
from doc_runs import run_chain
from minigpt.cli.main import COMMANDS as SUBCOMMANDS
from minigpt.config.loader import shipped_configs

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "dataset" / "README.md"]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
SCRIPT_NAMES = {"train.py", "demo.py", "demo_web.py", "eval.py", "serve.py"}  # MiniGPT-4's names, shims over minigpt
COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S+ )*(?:minigpt [a-z-]|python3? (?:-m (?:minigpt|pip)\b|\S+\.py)|"
                           r"torchrun |deepspeed |bash |pip3? install )")
CONFIG_PATH = re.compile(r"^(?:[\w.]+=)?((?:train_configs|eval_configs|prompts|scripts|\.ci)/[^\s:]*)")
OPTION = re.compile(r"^(--[A-Za-z][\w-]*)")


@dataclasses.dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    text: str  # the command line, continuations joined
    fenced: bool  # from a code block (else an inline span in prose)


@dataclasses.dataclass(frozen=True)
class Target:
    """Something to run with --help: ("minigpt", subcommand), ("script", path) or ("module", name)."""
    kind: str
    name: str


def fenced_commands(path: Path) -> list[DocCommand]:
    lines, commands = path.read_text().splitlines(), []
    block = None  # the language of the open code block
    index = 0
    while index < len(lines):
        stripped, number = lines[index].strip(), index + 1
        fence = re.match(r"^```([\w+-]*)$", stripped)
        if fence:
            block = fence.group(1) if block is None else None
        elif block in SHELL_BLOCKS:
            text = stripped
            if block == "console":
                text = text[2:] if text.startswith("$ ") else ""  # output lines have no prompt
            while text.endswith("\\") and index + 1 < len(lines):
                index += 1
                text = text[:-1].rstrip() + " " + lines[index].strip()
            if text and not text.startswith("#"):
                commands.append(DocCommand(f"{path.relative_to(REPO)}:{number}", text, fenced=True))
        index += 1
    return commands


def inline_commands(path: Path) -> list[DocCommand]:
    commands, in_block = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            in_block = not in_block
        elif not in_block:
            commands += [DocCommand(f"{path.relative_to(REPO)}:{number}", span, fenced=False)
                         for span in re.findall(r"`([^`]+)`", line) if COMMAND_START.match(span)]
    return commands


def all_commands() -> list[DocCommand]:
    commands = [c for document in DOCUMENTS for c in fenced_commands(document) + inline_commands(document)]
    seen: dict[str, int] = {}
    unique = []
    for command in commands:  # one test id per command, even with two on one line
        seen[command.where] = seen.get(command.where, 0) + 1
        where = command.where if seen[command.where] == 1 else f"{command.where}#{seen[command.where]}"
        unique.append(dataclasses.replace(command, where=where))
    return unique


def segments(text: str) -> list[list[str]]:
    """The simple commands of a line: split at pipes and `&&` / `;`, without redirections or VAR=value."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    result, current, tokens = [], [], list(lexer)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in ("|", "||", "&&", ";", "&"):
            result.append(current)
            current = []
        elif token in (">", ">>", "<", "2>", "&>"):
            index += 1  # and its file
        elif not current and re.match(r"^[A-Za-z_]\w*=", token):
            pass  # an environment variable for the command
        else:
            current.append(token)
        index += 1
    return [s for s in result + [current] if s]


def classify(tokens: list[str]) -> tuple[str, object, list[str]]:
    """-> (kind, what, its arguments): kind is "run" (what: a Target), "bash" (what: a path), "pip",
    "pytest", "error" (what: the problem) or "other"."""
    head, rest = tokens[0], tokens[1:]
    if head == "minigpt":
        return "run", Target("minigpt", rest[0] if rest and not rest[0].startswith("-") else ""), rest[1:]
    if head in ("python", "python3") and rest:
        if rest[0] == "-m" and len(rest) > 1:
            module, args = rest[1], rest[2:]
            if module == "minigpt":
                return "run", Target("minigpt", args[0] if args and not args[0].startswith("-") else ""), args[1:]
            if module == "pytest":
                return "pytest", None, args
            if module == "pip":
                return "pip", None, args
            return "run", Target("module", module), args
        if rest[0].endswith(".py"):
            return "run", Target("script", rest[0]), rest[1:]
        return "other", None, rest
    if head in ("torchrun", "deepspeed"):
        for index, token in enumerate(rest):
            if token in ("-m", "--module"):
                if head == "deepspeed":
                    return "error", ("deepspeed's launcher has no -m, and with --module it puts --local_rank "
                                     "before the subcommand: launch train.py"), []
                module, args = rest[index + 1], rest[index + 2:]
                if module == "minigpt":
                    return "run", Target("minigpt", args[0] if args else ""), args[1:]
                return "run", Target("module", module), args
            if token.endswith(".py"):
                return "run", Target("script", token), rest[index + 1:]
        return "other", None, rest
    if head == "bash" and rest:
        return "bash", rest[0], rest[1:]
    if head in ("pip", "pip3"):
        return "pip", None, rest
    return "other", None, rest


def targets_of(commands: list[DocCommand]) -> list[Target]:
    found = set()
    for command in commands:
        try:
            parts = segments(command.text)
        except ValueError:
            continue  # reported by the test of that command
        for tokens in parts:
            kind, what, _ = classify(tokens)
            if kind == "run" and (what.kind != "script" or (REPO / what.name).is_file()):
                found.add(what)
    return sorted(found, key=lambda t: (t.kind, t.name))


def help_argv(target: Target) -> list[str]:
    """The target's --help as doc_runs.run_chain runs it (a script by its path in the checkout)."""
    if target.kind == "minigpt":
        return ["minigpt", *([target.name] if target.name else []), "--help"]
    return ["-m", target.name, "--help"] if target.kind == "module" else [str(REPO / target.name), "--help"]


@functools.cache
def help_runs() -> tuple[dict[Target, tuple[int, str]], list[str], frozenset[str]]:
    """(target -> (exit status, output) of its --help, the minigpt subcommands, the shipped configs'
    names), for every target the documents name, from one child process."""
    targets = targets_of(all_commands()) + [Target("minigpt", "")]
    with tempfile.TemporaryDirectory() as folder:
        results = run_chain([help_argv(t) for t in targets], Path(folder), timeout=600)
    return ({t: (code, text) for t, (code, text, _) in zip(targets, results)}, list(SUBCOMMANDS),
            frozenset(shipped_configs()))


def shown(target: Target) -> str:
    return {"minigpt": f"python -m minigpt {target.name}", "module": f"python -m {target.name}",
            "script": f"python {target.name}"}[target.kind] + " --help"


def problems_of(command: DocCommand) -> list[str]:
    try:
        parts = segments(command.text)
    except ValueError as error:
        return [f"cannot be read as a shell command ({error})"]
    problems = []
    for tokens in parts:
        kind, what, args = classify(tokens)
        if kind == "error":
            problems.append(what)
        if kind == "bash" and not (REPO / what).is_file():
            problems.append(f"bash {what}: no such script")
        if kind == "pip":
            extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
            for group in re.findall(r"\[([\w,-]+)\]", " ".join(args)):
                problems += [f"pip extra [{e}] is not in pyproject.toml" for e in group.split(",") if e not in extras]
        if kind == "pytest":
            problems += [f"{a}: no such test file" for a in args
                         if a.startswith("tests/") and not (REPO / a.split("::")[0]).exists()]
        if command.fenced:
            for token in args:
                match = CONFIG_PATH.match(token)
                if match and not (REPO / match.group(1)).exists():
                    problems.append(f"{match.group(1)}: no such file")
        if kind != "run":
            continue
        if what.kind == "script" and not (REPO / what.name).is_file():
            problems.append(f"{what.name}: no such script")
            continue
        if what.kind == "minigpt" and what.name and what.name not in help_runs()[1]:
            problems.append(f"minigpt {what.name or '(no subcommand)'}: not a subcommand "
                            f"(there are: {', '.join(help_runs()[1])})")
            continue
        code, output = help_runs()[0][what]
        if code != 0:
            problems.append(f"`{shown(what)}` exited with {code}: {output[-2000:]}")
            continue
        options = {m.group(1) for a in args if (m := OPTION.match(a))}
        problems += [f"{option}: not an option of `{shown(what)}`" for option in sorted(options)
                     if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", output)]
        if command.fenced:
            for index, token in enumerate(args):
                value = token.split("=", 1)[1] if token.startswith("--cfg-path=") else (
                    args[index + 1] if token == "--cfg-path" and index + 1 < len(args) else None)
                if value is not None and not (REPO / value).is_file() \
                        and value.removesuffix(".yaml") not in help_runs()[2]:
                    problems.append(f"--cfg-path {value}: neither a file nor a shipped config's name")
    return problems


COMMANDS = all_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command(command):
    problems = problems_of(command)
    assert not problems, f"{command.where}: {command.text}\n" + "\n".join(f"  - {p}" for p in problems)


def test_the_documents_show_commands():
    """The extraction itself works: the quick start, a subcommand under torchrun and the shims are found."""
    texts = {c.text.split("#")[0].strip() for c in COMMANDS if c.fenced}
    assert {"bash scripts/quickstart.sh", "bash .ci/run"} <= texts
    kinds = {classify(tokens)[1] for c in COMMANDS for tokens in segments(c.text) if classify(tokens)[0] == "run"}
    assert {Target("minigpt", "train"), Target("minigpt", "chat"), Target("script", "train.py")} <= kinds
    assert all(d.exists() for d in DOCUMENTS) and len(DOCUMENTS) >= 9


def test_every_subcommand_is_documented():
    """Each subcommand of `minigpt --help` has a row in the README's table, and is shown in a docs/ page."""
    readme = (REPO / "README.md").read_text()
    docs = "\n".join(p.read_text() for p in DOCUMENTS if p.parent.name == "docs")
    missing = [s for s in help_runs()[1] if f"| `minigpt {s}" not in readme]
    assert not missing, f"README.md's command table lacks: {missing}"
    unshown = [s for s in help_runs()[1] if f"minigpt {s}" not in docs]
    assert not unshown, f"no page of docs/ shows: {unshown}"


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower()).replace("_", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_links_between_documents_resolve():
    broken = []
    for document in DOCUMENTS:
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            path = (document.parent / file).resolve() if file else document
            if not path.exists():
                broken.append(f"{document.relative_to(REPO)}: {target} (no such file)")
            elif anchor and path.suffix == ".md":
                anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)}
                if anchor not in anchors:
                    broken.append(f"{document.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_docs_named_by_the_command_line_exist():
    """`minigpt <sub> --help` points at docs/ pages; those pages exist."""
    named = {(target, page) for target, (_, output) in help_runs()[0].items()
             for page in re.findall(r"docs/[\w.-]+\.md", output)}
    missing = [f"`{shown(target)}` names {page}" for target, page in sorted(named, key=str)
               if not (REPO / page).is_file()]
    assert not missing, "\n".join(missing)
