"""Convert a pickled checkpoint you trust (.pth) to safetensors, listing what it would run first.

    minigpt convert-checkpoint FILE [--out OUT.safetensors] [--trust]

Prints every global the file would import when unpickled (read from its opcodes: nothing is run) and
whether torch's weights_only loader allows it. A file of plain tensors is converted at once. Any other
is unpickled only with --trust; without it the command stops (exit status 2). The weights are
checkpoint["model"] when present (MiniGPT-4's layout), else the file's dict; only tensors are kept, and
the rest is listed. Give the result to model.ckpt, model.vit_weights or model.q_former_model.
"""
from __future__ import annotations

import argparse

from minigpt.ops.convert_checkpoint import convert, describe, inspect_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the pickled checkpoint (.pth, .pt, .bin)")
    parser.add_argument("--out", help="the safetensors file to write (default: FILE with the suffix .safetensors)")
    parser.add_argument("--trust", action="store_true",
                        help="unpickle a file that names more than tensors, running what it names: only for a "
                             "file whose source you trust")


def run(args: argparse.Namespace) -> int:
    scan = inspect_file(args.file)
    print(describe(scan), flush=True)  # before anything is unpickled
    done = convert(scan, args.out, args.trust)
    print(f"wrote {done.out}: {done.kept} tensor{'' if done.kept == 1 else 's'} from {done.source}")
    if done.dropped:
        print(f"dropped ({len(done.dropped)}, not tensors): {', '.join(done.dropped)}")
    print("name it where the .pth was named (model.ckpt, model.vit_weights or model.q_former_model)")
    return 0
