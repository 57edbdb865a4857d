"""Plot runs' loss (raw and smoothed), learning rate, gradient norm, throughput and logged evaluation
scores against the step, as a PNG (matplotlib: the `plot` extra).

    minigpt plot output/tiny_stage2                              # -> output/tiny_stage2/curves.png
    minigpt plot output/tiny_stage2 --out loss.png
    minigpt plot output/run_a output/run_b --compare --out ab.png  # both runs on one set of axes per panel

Reads RUN_DIR/log.jsonl, which every run writes (a run also writes curves.png when it ends). It works on a
run that is still going, too. Several run folders without --compare get a curves.png each.
"""
from __future__ import annotations

import argparse

from minigpt.common.errors import InputError
from minigpt.runners.curves import plot_curves, read_curves


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run's output_dir (holding log.jsonl)")
    parser.add_argument("--compare", action="store_true", help="draw every run on one set of axes per panel")
    parser.add_argument("--out", help="the PNG to write (default RUN_DIR/curves.png; compare.png with --compare)")


def run(args: argparse.Namespace) -> int:
    if args.out and len(args.run_dirs) > 1 and not args.compare:
        raise InputError("--out with several runs needs --compare (one PNG for all)")
    groups = [args.run_dirs] if args.compare else [[run_dir] for run_dir in args.run_dirs]
    for group in groups:
        out = plot_curves(group, args.out)
        for run_dir in group:
            loss = read_curves(f"{run_dir}/log.jsonl").series["loss"]
            first, last = min(loss), max(loss)
            print(f"{run_dir}: loss {loss[first]:.4f} at step {first} -> {loss[last]:.4f} at step {last}")
        print(f"wrote {out}")
    return 0
