"""List the configs shipped with the package; any command's --cfg-path takes their names.

    minigpt configs
"""
from __future__ import annotations

import argparse

from minigpt.config.loader import shipped_configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    for name, path in shipped_configs().items():
        print(f"{name:<36} {path.parent.name}/{path.name}")
    return 0
