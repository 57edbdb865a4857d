"""Plot a run's loss, learning rate and gradient norm against the step, as a PNG.

    minigpt plot output/tiny_stage2                  # -> output/tiny_stage2/curves.png
    minigpt plot output/tiny_stage2 --out loss.png

Reads RUN_DIR/log.jsonl, which every run writes (a run also writes curves.png when it ends). It works on a
run that is still going, too.
"""
from __future__ import annotations

import argparse

from minigpt.runners.curves import plot_curves, read_curves


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run's output_dir (holding log.jsonl)")
    parser.add_argument("--out", help="the PNG to write (default RUN_DIR/curves.png)")


def run(args: argparse.Namespace) -> int:
    out = plot_curves(args.run_dir, args.out)
    curves = read_curves(f"{args.run_dir}/log.jsonl")
    loss = curves.series["loss"]
    first, last = min(loss), max(loss)
    print(f"wrote {out}: loss {loss[first]:.4f} at step {first} -> {loss[last]:.4f} at step {last}")
    return 0
