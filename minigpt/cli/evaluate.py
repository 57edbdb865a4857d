"""Evaluate a model on the benchmarks of an eval config's `evaluation_datasets` section.

    minigpt eval --cfg-path eval_configs/X.yaml [--datasets a b] [--options key=value ...]
    torchrun --nproc-per-node N -m minigpt eval --cfg-path ...      the questions split across ranks

Each section names a data set builder (as under `datasets:`) plus the metric, the question wording and
the generation length (docs/evaluation.md). Predictions and scores go to run.output_dir (or
run.save_path), one folder per data set. Run it again after an interruption and it continues from the
answers written.
"""
from __future__ import annotations

import argparse
import json

from minigpt.cli.options import add_config_arguments
from minigpt.common.dist import cleanup
from minigpt.config.loader import load_config
from minigpt.runners.eval_recipe import evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "eval config with an evaluation_datasets section")
    parser.add_argument("--datasets", nargs="+", help="evaluate only these sections")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier answers instead of continuing")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.cfg_path, args.options, for_training=False, for_evaluation=True,
                         evaluation_names=args.datasets)
    try:
        results = evaluate(config, args.cfg_path, args.datasets, args.overwrite)
    finally:
        cleanup()
    for result in results.values():
        print(json.dumps(result))
    return 0
