"""Check every data set of a training config before training on it.

    minigpt check-data --cfg-path train_configs/X.yaml [--options ...] [--limit N]

For each data set: the annotation file parses, each record's image exists and decodes, turns alternate,
the `<image>` marker sits at the start or end of the first human turn, and the tokenized sample fits
max_txt_len. Prints a summary per data set and the first problems with their record ids; exits with 1
when any record could not be trained on (truncation and marker placement are warnings).
"""
from __future__ import annotations

import argparse

from minigpt.cli.options import add_config_arguments
from minigpt.config.loader import load_config
from minigpt.ops.check_data import check_config, print_reports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "train config")
    parser.add_argument("--limit", type=int, help="check at most this many records per data set")
    parser.add_argument("--show", type=int, default=10, help="problems listed per data set")


def run(args: argparse.Namespace) -> int:
    # The data are checked, not the model: a stage-2 config's stage-1 checkpoint need not exist yet.
    config = load_config(args.cfg_path, [*(args.options or []), "model.ckpt=null"])
    reports = check_config(config, args.limit)
    print_reports(reports, args.show)
    return 1 if any(r.errors for r in reports) else 0
