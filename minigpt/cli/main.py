"""`minigpt <command> ...`: train, chat, serve and evaluate MiniGPT-4 / MiniGPT-v2 style models.

An error in what was given (a config, a data file, a checkpoint) ends the command with its one-line
message and exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from minigpt.common.errors import InputError, MissingExtraError

# command -> its module in minigpt.cli, and the extra it needs beyond the core install (training, chat, eval).
COMMANDS: dict[str, tuple[str, str | None]] = {
    "train": ("train", None), "chat": ("chat", None), "web": ("web", "web"), "serve": ("serve", "serve"),
    "eval": ("evaluate", None), "export": ("export", None), "check-data": ("check_data", None),
    "mix-weights": ("mix_weights", None), "configs": ("configs", None), "agent": ("agent", "agents"),
    "mcp": ("mcp", "agents"), "paragraph": ("paragraph", "agents"), "plot": ("plot", None),
    "convert-checkpoint": ("convert_checkpoint", None), "plan": ("plan", None), "download": ("download", None),
}


def command_module(name: str) -> ModuleType | MissingExtraError:
    """The command's module; or, where a command of an extra misses one of its libraries, the error that
    names the extra (the command stays listed, and says so when run)."""
    module_name, extra = COMMANDS[name]
    try:
        return importlib.import_module(f"minigpt.cli.{module_name}")
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if extra is None or not missing or missing == "minigpt":
            raise
        return MissingExtraError(f"minigpt {name}", missing, extra)


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser; or, for `minigpt <command> ...`, the chosen command's alone: each command's
    module brings its own libraries, and a command starts without importing the others'."""
    parser = argparse.ArgumentParser(prog="minigpt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in [chosen] if chosen in COMMANDS else COMMANDS:
        module = command_module(name)
        if isinstance(module, MissingExtraError):
            sub = commands.add_parser(name, help=str(module), description=str(module))
            sub.set_defaults(run=module.refuse, takes_anything=True)
            continue
        summary, _, details = (module.__doc__ or "").strip().partition("\n")
        sub = commands.add_parser(name, help=summary, description=f"{summary}\n{details}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "takes_anything", False):
        parser.parse_args(argv)  # exits naming the unknown arguments
    try:
        return args.run(args) or 0
    except InputError as error:
        print(f"minigpt {args.command}: error: {error}", file=sys.stderr)
        return 2


def entry_point() -> None:
    """The `minigpt` console command."""
    try:
        sys.exit(main())
    except BrokenPipeError:  # `minigpt configs | head`: the reader left; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
