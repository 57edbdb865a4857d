"""The option and config names the documents mention, and whether the code knows them
(tests/test_doc_commands.py).

Config keys: a dotted name that starts with a config section (`model.ckpt`, `run.packing_length`,
`datasets.laion.build_info.storage`, `model.parts.<part>.mode`, `model.extra_encoders[*].weights`), in an
inline code span or a shell command, and every key of a YAML block whose top level is config sections.
Each is walked down the schema's dataclasses (minigpt/common/schema.py): `model.` ModelConfig, `run.`
RunConfig, `datasets.<name>.` the config class of the builder registered under that name (or the one
its `builder:` names), `evaluation_datasets.<name>.` that plus EvalOptions. A Dict field takes any key,
then its value type; a List field takes an index (`[*]`, `[0]`, `0`); Any takes anything below it.
A placeholder (`<name>`, `NAME`) stands for any key.

Options: each `--option` in prose belongs to the last program the same line names before it
(`minigpt <sub>`, `<sub>` alone in a code span, `python -m bench.X`, `python X.py`, `X.sh`, `torchrun`): it must be one of that
program's options (its argparse parser, its --help, or the script's text). An option whose line names
no program must be an option of one of them. Programs of other projects are in EXTERNAL, with why.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import typing
from typing import Any

from conftest import REPO
from test_docs import DOCUMENTS

SECTIONS = ("model", "run", "datasets", "evaluation_datasets")
KEY = re.compile(r"(?<![\w./-])(model|run|datasets|evaluation_datasets)((?:\.(?:[\w-]+|<\w+>|\{[^}]*\})"
                 r"(?:\[[^\]]*\])?)+)")
FILE_NAME = re.compile(r"\.(safetensors|json|jsonl|pth|bin|py|yaml|md|txt)$")
PLACEHOLDER = re.compile(r"^(<\w+>|[A-Z][A-Z_]*)$")
OPTION = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
PROGRAM = re.compile(r"(?:python3? -m minigpt|minigpt) ([a-z][a-z-]*)|python3? -m ([\w.]+)|python3? (\S+\.py)|"
                     r"(?:bash )?([\w./-]+\.sh)|(torchrun|deepspeed|img2dataset|sbatch|tensorboard|lmms[_-]eval|pip)\b|"
                     r"(?<=`)([a-z][a-z-]*)(?= --)")  # the last: a subcommand alone in a code span (`train --plan`)
EXTERNAL = {  # programs of other projects, whose options are theirs to document
    "deepspeed": "DeepSpeed's launcher (the gpu extra); not installed with the tests",
    "img2dataset": "the LAION downloader, another project",
    "sbatch": "SLURM's, on a cluster",
    "tensorboard": "TensorBoard's own command (the tensorboard extra)",
    "lmms_eval": "lmms-eval, another project (the lmms-eval extra)",
    "lmms-eval": "lmms-eval, another project (the lmms-eval extra)",
    "pip": "pip's",
}


NOT_KEYS = {  # dotted names in the documents that start like a config key and are not one
    "datasets.save_to_disk": "the Hugging Face `datasets` library's save_to_disk",
}
EXAMPLE_BUILDERS = {  # builders the documents write as examples, not registered: their keys are checked as any data set's
    "my_qa": "dataset/README.md's example of adding a builder (tests/test_dataset_readme.py registers and trains it)",
}

EXTERNAL_OPTIONS = {  # options of EXTERNAL programs that prose names on a line of their own
    "--model": "lmms-eval's (`--model minigpt`, docs/evaluation.md#lmms-eval)",
    "--model_args": "lmms-eval's",
}


def expand(path: str) -> list[list[str]]:
    """`.build_info.{storage, ann_path}` -> two paths; `[*]` / `[0]` -> an index segment."""
    brace = re.search(r"\{([^}]*)\}", path)
    if brace:
        return [p for choice in brace.group(1).split(",")
                for p in expand(path[:brace.start()] + choice.strip() + path[brace.end():])]
    return [[s for s in re.split(r"\.|\[([^\]]*)\]", path) if s]]


def unwrap(kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return unwrap(args[0]) if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind


def walk(kind: Any, segments: list[str], where: str) -> str | None:
    """None when the segments are a path through the type, else what is wrong."""
    kind = unwrap(kind)
    if not segments or kind is Any:
        return None
    head, rest = segments[0], segments[1:]
    origin = typing.get_origin(kind)
    if kind in (dict, typing.Dict):
        return None  # a mapping of any keys and values
    if origin in (dict, typing.Dict):
        return walk(typing.get_args(kind)[1], rest, f"{where}.{head}")
    if origin in (list, typing.List):
        ok = head == "*" or head.isdigit() or PLACEHOLDER.match(head)
        return walk(typing.get_args(kind)[0], rest, f"{where}[{head}]") if ok else f"{where} is a list"
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        if head not in hints:
            return f"{where}.{head}: no such key in {kind.__name__}"
        return walk(hints[head], rest, f"{where}.{head}")
    return f"{where} holds a {getattr(kind, '__name__', kind)}, not keys ({'.'.join(segments)})"


@functools.cache
def dataset_class(builder: str, evaluation: bool) -> type | None:
    from minigpt.common import registry
    from minigpt.common.schema import DatasetConfig
    from minigpt.config.loader import _eval_config_class
    if PLACEHOLDER.match(builder) or builder in EXAMPLE_BUILDERS:
        base = DatasetConfig
    elif builder in registry.names("builder"):
        base = registry.get("builder", builder).config_class
    else:
        return None
    return _eval_config_class(base) if evaluation else base


def key_problem(segments: list[str], builders: dict[str, str] | None = None) -> str | None:
    """What is wrong with a config key given as its segments (["model", "parts", "llm", "mode"]), or None.
    `builders`: a YAML block's data set sections -> the builder each names."""
    from minigpt.common.schema import ModelConfig, RunConfig
    section, rest = segments[0], segments[1:]
    if section in ("model", "run"):
        return walk(ModelConfig if section == "model" else RunConfig, rest, section)
    if not rest:
        return None
    name = rest[0]
    builder = (builders or {}).get(name) or name
    config_class = dataset_class(builder, section == "evaluation_datasets")
    if config_class is None:
        return f"{section}.{name}: no builder is registered as {builder!r}"
    return walk(config_class, rest[1:], f"{section}.{name}")


def keys_in_text(text: str) -> list[list[str]]:
    """The config keys a span of text or a command line mentions, as segment lists."""
    found = []
    for match in KEY.finditer(text):
        if not FILE_NAME.search(match.group(0)) and match.group(0) not in NOT_KEYS:
            found += [[match.group(1), *path] for path in expand(match.group(2))]
    return found


def yaml_keys(data: dict, prefix: list[str], builders: dict[str, str]) -> list[list[str]]:
    """Every key path of a YAML config block (lists of mappings walked by index; `...` left out)."""
    found = []
    for name, value in data.items():
        path = [*prefix, str(name)]
        if name == "...":
            continue
        if len(path) == 2 and path[0] in ("datasets", "evaluation_datasets") and isinstance(value, dict):
            builders[str(name)] = value.get("builder") or str(name)
        found.append(path)
        if isinstance(value, dict) and not (len(path) >= 2 and path[-1] in ("vit_config", "llama_config")):
            found += yaml_keys(value, path, builders)
        elif isinstance(value, list):
            found += [k for index, item in enumerate(value) if isinstance(item, dict)
                      for k in yaml_keys(item, [*path, str(index)], builders)]
    return found


@functools.cache
def minigpt_options() -> dict[str, frozenset[str]]:
    """Subcommand -> its options, from the parser `minigpt` builds."""
    from minigpt.cli.main import build_parser
    subparsers = next(a for a in build_parser()._actions if a.choices and isinstance(a.choices, dict))
    return {name: frozenset(o for action in parser._actions for o in action.option_strings)
            for name, parser in subparsers.choices.items()}


@functools.cache
def torchrun_options() -> frozenset[str]:
    from torch.distributed.run import get_args_parser
    return frozenset(o for action in get_args_parser()._actions for o in action.option_strings)


def options_of(match: re.Match, help_text) -> frozenset[str] | str:
    """The options of the program a PROGRAM match names, or (a str) why they are not checked."""
    sub, module, script, bash, tool, bare = match.groups()
    sub = sub or bare
    if sub is not None:
        return minigpt_options().get(sub, frozenset())
    if bash is not None:
        return frozenset(OPTION.findall((REPO / bash).read_text())) if (REPO / bash).is_file() else frozenset()
    if tool == "torchrun":
        return torchrun_options()
    if tool is not None:
        return EXTERNAL[tool]
    return frozenset(OPTION.findall(help_text("module", module) if module else help_text("script", script)))


def document_lines():
    """(document, line number, line, the language of the code block it is in, or None for prose)."""
    for document in DOCUMENTS:
        block = None
        for number, line in enumerate(document.read_text().splitlines(), 1):
            fence = re.match(r"^```([\w+-]*)$", line.strip())
            if fence:
                block = fence.group(1) if block is None else None
                continue
            yield str(document.relative_to(REPO)), number, line, block


def yaml_blocks():
    """(file, first line, text) of every ```yaml block."""
    blocks, current = [], None
    for file, number, line, block in document_lines():
        if block == "yaml":
            current = current or (file, number, [])
            current[2].append(line)
        elif current:
            blocks.append((current[0], current[1], "\n".join(current[2])))
            current = None
    return blocks
