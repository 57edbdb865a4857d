"""Train a model: the config's data sets, its model parts, its run settings.

    minigpt train --cfg-path tiny_stage1
    minigpt train --nproc-per-node N --cfg-path train_configs/X.yaml [--options key=value ...]
    torchrun --nproc-per-node N -m minigpt train --cfg-path train_configs/X.yaml
    deepspeed --num_gpus N train.py --cfg-path ... --options run.deepspeed_config=train_configs/deepspeed/zero2.json

A plain run is one process; with --nproc-per-node, or under torchrun, each rank is a DDP process.
The config is validated, and the output folder checked, before any model is built; with
--nproc-per-node that happens before any process starts, and a failed rank is reported in one line.
"""
from __future__ import annotations

import argparse
import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser as torchrun_parser
from torch.distributed.run import run as torchrun

from minigpt.cli.options import add_config_arguments
from minigpt.cli.plan import add_plan_arguments, print_plan
from minigpt.config.loader import load_config
from minigpt.runners.train_recipe import TrainRecipe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "train config")
    parser.add_argument("--nproc-per-node", type=int, help="start this many DDP processes on this machine "
                                                            "(torchrun's launcher) after checking the config")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's
    parser.add_argument("--plan", action="store_true", help="print the run's plan (minigpt plan) and exit, before "
                                                            "anything is loaded")
    add_plan_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.plan:
        return print_plan(args, training=True)
    config = load_config(args.cfg_path, args.options)
    if args.nproc_per_node:
        return launch(args)
    recipe = TrainRecipe(config)
    try:
        recipe.setup()
        recipe.train()
    finally:
        recipe.close()
    return 0


def launch(args: argparse.Namespace) -> int:
    """Run `minigpt train` in `nproc_per_node` processes through torchrun's launcher (standalone, one
    machine). A rank that fails has printed its own message, so the launcher's report and its log line
    are left out; an input error (exit status 2) is then the rank's one line, as without ranks, and any
    other failure gets a line naming the rank and its exit code."""
    command = ["--standalone", "--nproc-per-node", str(args.nproc_per_node), "-m", "minigpt", "train",
               "--cfg-path", args.cfg_path, *(["--options", *args.options] if args.options else [])]
    failures = logging.getLogger("torch.distributed.elastic.multiprocessing.api")  # "failed (exitcode: 2) ..."
    level = failures.level
    failures.setLevel(logging.CRITICAL)
    try:
        torchrun(torchrun_parser().parse_args(command))
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        if failure.exitcode != 2:
            print(f"minigpt train: rank {rank} stopped with exit code {failure.exitcode} (its message is above)",
                  file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    finally:
        failures.setLevel(level)
    return 0
