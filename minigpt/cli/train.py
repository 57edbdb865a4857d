"""Train a model: the config's data sets, its model parts, its run settings.

    minigpt train --cfg-path tiny_stage1
    torchrun --nproc-per-node N -m minigpt train --cfg-path train_configs/X.yaml [--options key=value ...]
    deepspeed --num_gpus N -m minigpt train --cfg-path ... --options run.deepspeed_config=train_configs/deepspeed/zero2.json

A plain run is one process; under torchrun each rank is a DDP process. The config is validated, and
the output folder checked, before any model is built.
"""
from __future__ import annotations

import argparse

from minigpt.cli.options import add_config_arguments
from minigpt.common import registry
from minigpt.config.loader import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "train config")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's


def run(args: argparse.Namespace) -> int:
    config = load_config(args.cfg_path, args.options)
    recipe = registry.get("runner", config.run.runner)(config)
    try:
        recipe.setup()
        recipe.train()
    finally:
        recipe.close()
    return 0
