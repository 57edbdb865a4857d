"""Plan a config without loading it: parameters per part, memory per GPU, data, and whether it fits.

    minigpt plan --cfg-path train_configs/X.yaml [--options ...] [--gpus N] [--gpu-memory 24GB]
    minigpt train --cfg-path ... --plan          the same, then exit before anything is built
    minigpt chat --cfg-path ... --plan           the inference plan (precision, quantisation, KV cache)

The model is built on the meta device: no weight file is read, and none need be there. The LLM's shape
comes from its config.json alone: model.llama_model may be a folder holding only that file, or give the
file with --llm-config. A training plan is made when the config's data sets have batch sizes.
"""
from __future__ import annotations

import argparse

from minigpt.cli.options import add_config_arguments
from minigpt.common.errors import InputError
from minigpt.config.loader import load_config
from minigpt.runners.plan import make_plan, parse_memory_size, render_plan


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """What shapes a plan besides the config (shared with `train --plan` and `chat --plan`)."""
    parser.add_argument("--llm-config", help="the LLM's config.json (or a folder holding it), instead of the one in "
                                             "model.llama_model")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs the run spreads over (ZeRO divides by them)")
    parser.add_argument("--gpu-memory", help="memory of one GPU, e.g. 24GB: say whether the run fits, and what "
                                             "would make it fit")
    parser.add_argument("--seq-len", type=int, help="tokens per row (default: the longest the config allows in "
                                                    "training, the full context in inference)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    add_plan_arguments(parser)
    parser.add_argument("--inference", action="store_true", help="plan chatting / serving with the config's model "
                                                                 "even when it could train")


def print_plan(args: argparse.Namespace, training: bool | None) -> int:
    """Load the config without its files, plan, print; the one call each command makes for a plan."""
    if args.gpus < 1:
        raise InputError(f"--gpus: {args.gpus}; at least 1")
    gpu_memory = parse_memory_size(args.gpu_memory) if args.gpu_memory else None
    config = load_config(args.cfg_path, args.options, for_training=bool(training), for_planning=True)
    plan = make_plan(config, str(args.cfg_path), training=training, gpus=args.gpus, gpu_memory=gpu_memory,
                     seq_len=args.seq_len, llm_config_path=args.llm_config)
    print(render_plan(plan))
    return 0


def run(args: argparse.Namespace) -> int:
    return print_plan(args, training=False if args.inference else None)
