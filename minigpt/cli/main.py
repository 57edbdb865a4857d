"""`minigpt <command> ...`: train, chat, serve and evaluate MiniGPT-4 / MiniGPT-v2 style models.

An error in what was given (a config, a data file, a checkpoint) ends the command with its one-line
message and exit status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from minigpt.cli import (agent, chat, check_data, configs, convert_checkpoint, download, evaluate, export, mcp,
                         mix_weights, paragraph, plan, plot, serve, train, web)
from minigpt.common.errors import InputError

COMMANDS: dict[str, ModuleType] = {
    "train": train, "chat": chat, "web": web, "serve": serve, "eval": evaluate, "export": export,
    "check-data": check_data, "mix-weights": mix_weights, "configs": configs, "agent": agent,
    "mcp": mcp, "paragraph": paragraph, "plot": plot, "convert-checkpoint": convert_checkpoint,
    "plan": plan, "download": download,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minigpt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, module in COMMANDS.items():
        summary, _, details = (module.__doc__ or "").strip().partition("\n")
        sub = commands.add_parser(name, help=summary, description=f"{summary}\n{details}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
