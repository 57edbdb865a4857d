"""Export a model with its LoRA (or one task adapter) folded into the base weights, or its LLM LoRA as peft folders.

    minigpt export --cfg-path eval_configs/X.yaml --out output/merged [--adapter grounding]
    minigpt export --cfg-path eval_configs/X.yaml --out output/peft --format peft

--format peft writes OUT/llm_adapter (adapter_config.json + adapter_model.safetensors, which
PeftModel.from_pretrained opens on the base LLM), OUT/base_llm when the LLM was built from random weights,
and OUT/model.safetensors with every other weight.

The eval config describes the model as it was trained. The output folder holds model.safetensors and
a config.yaml without LoRA or adapters whose model.ckpt points at it: `minigpt chat --cfg-path
output/merged/config.yaml` talks to it, with the unmerged model's logits.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from minigpt.cli.options import add_config_arguments
from minigpt.config.loader import load_config
from minigpt.tools.export import export_merged, export_peft


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "eval config of the trained model")
    parser.add_argument("--adapter", help="the task adapter to merge (default: the LLM's LoRA, if any)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("merged", "peft"), default="merged",
                        help="merged: one plain checkpoint (default); peft: the LLM's LoRA as a peft adapter folder")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.cfg_path, args.options, for_training=False)
    if args.format == "peft":
        written = export_peft(config, args.out)
        print("exported " + ", ".join(f"{name}: {path}" for name, path in written.items()) +
              f"; chat with: minigpt chat --cfg-path {Path(args.out) / 'config.yaml'}")
        return 0
    merged = export_merged(config, args.out, args.adapter)
    config_path = Path(args.out) / "config.yaml"
    print(f"exported {Path(args.out) / 'model.safetensors'} with {merged} merged; "
          f"chat with: minigpt chat --cfg-path {config_path}")
    return 0
