"""Export a model with its LoRA (or one task adapter) folded into the base weights, its LLM LoRA as peft
folders, or the model as folders that plain transformers opens.

    minigpt export --cfg-path eval_configs/X.yaml --out output/merged [--adapter grounding]
    minigpt export --cfg-path eval_configs/X.yaml --out output/peft --format peft
    minigpt export --cfg-path eval_configs/X.yaml --out output/hf --format hf [--dtype bfloat16]

--format hf writes MiniGPT-4 as a Blip2ForConditionalGeneration folder, and MiniGPT-v2 as a Llama folder
(OUT/llm), a Blip2VisionModel folder (OUT/vision) and OUT/projector.safetensors (minigpt/ops/hf_export.py).

--format peft writes OUT/llm_adapter (adapter_config.json + adapter_model.safetensors, which
PeftModel.from_pretrained opens on the base LLM) and OUT/adapters/NAME for each task adapter,
OUT/base_llm when the LLM was built from random weights, and OUT/model.safetensors with every other weight.

The eval config describes the model as it was trained. The output folder holds model.safetensors and
a config.yaml without LoRA or adapters whose model.ckpt points at it: `minigpt chat --cfg-path
output/merged/config.yaml` talks to it, with the unmerged model's logits.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from minigpt.cli.options import add_config_arguments
from minigpt.config.loader import load_config
from minigpt.ops.export import export_merged, export_peft
from minigpt.ops.hf_export import DTYPES, export_hf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "eval config of the trained model")
    parser.add_argument("--adapter", help="the task adapter to merge (default: the LLM's LoRA, if any)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("merged", "peft", "hf"), default="merged",
                        help="merged: one plain checkpoint (default); peft: LoRA as peft adapter folders; "
                             "hf: folders transformers opens")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32", help="weights' dtype (--format hf)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest weight file (--format hf)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.cfg_path, args.options, for_training=False)
    if args.format == "peft":
        written = export_peft(config, args.out)
        print("exported " + ", ".join(f"{name}: {path}" for name, path in written.items()) +
              f"; chat with: minigpt chat --cfg-path {Path(args.out) / 'config.yaml'}")
        return 0
    if args.format == "hf":
        out = export_hf(config, args.out, args.dtype, args.max_shard_size, args.adapter)
        opener = "Blip2ForConditionalGeneration.from_pretrained" if (out / "config.json").exists() else \
            "docs/demos-and-serving.md#minigpt-v2-in-transformers on"
        print(f"exported {out} ({args.dtype}); open it with {opener} {out}")
        return 0
    merged = export_merged(config, args.out, args.adapter)
    config_path = Path(args.out) / "config.yaml"
    print(f"exported {Path(args.out) / 'model.safetensors'} with {merged} merged; "
          f"chat with: minigpt chat --cfg-path {config_path}")
    return 0
