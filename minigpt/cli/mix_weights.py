"""Mix two finetuned checkpoints of one architecture: (1 - alpha) * A + alpha * B, as SPHINX mixes models.

    minigpt mix-weights --ckpt A --ckpt B --alpha 0.5 --out C

A and B are checkpoint folders (a run folder: its newest checkpoint) or .safetensors files; C is a new
checkpoint folder that model.ckpt loads. Other weight names, shapes or dtypes, other model shapes and
LoRA weights (merge them first with `minigpt export`) are refused before anything is written.
"""
from __future__ import annotations

import argparse

from minigpt.ops.mix_weights import mix_checkpoints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", action="append", required=True, help="a checkpoint; give exactly two")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the second checkpoint, in [0, 1]")
    parser.add_argument("--out", required=True, help="the new checkpoint folder")


def run(args: argparse.Namespace) -> int:
    if len(args.ckpt) != 2:
        raise SystemExit(f"minigpt mix-weights: error: --ckpt: give exactly two checkpoints, got {len(args.ckpt)}")
    out = mix_checkpoints(args.ckpt[0], args.ckpt[1], args.alpha, args.out)
    print(f"wrote {out}: (1 - {args.alpha}) * {args.ckpt[0]} + {args.alpha} * {args.ckpt[1]}")
    return 0
