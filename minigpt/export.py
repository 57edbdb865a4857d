"""Export a model with its LoRA folded into the base weights, as one plain checkpoint.

    python -m minigpt.export --cfg-path eval_configs/X.yaml --out output/merged [--adapter grounding]

The eval config describes the model as it was trained (`model.ckpt`, LoRA on the LLM through
`parts.llm.mode: lora`, or task adapters in `model.adapters`). Without `--adapter` the LLM's LoRA is
merged (W + B @ A * scale, peft's `merge_and_unload`); with it, that task adapter is. The output folder
holds `model.safetensors` (every weight, plain names) and a `config.yaml` without LoRA or adapters whose
`model.ckpt` points at it, ready for demo.py --cfg-path; its logits match the unmerged model's.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from minigpt.common.config import load_config, save_config
from minigpt.models.inference import load_for_inference


def merged_weights(model, adapter: str | None) -> dict[str, torch.Tensor]:
    """Every weight of `model` with the chosen LoRA folded in."""
    if adapter:
        return model.adapters.merged_state_dict(adapter)
    if model.part_modes["llm"] == "lora":
        model.llama_model = model.llama_model.merge_and_unload()
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg-path", required=True, help="eval config of the trained model")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    parser.add_argument("--adapter", help="the task adapter to merge (default: the LLM's LoRA, if any)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args()

    config = load_config(args.cfg_path, args.options, for_training=False)
    if args.adapter and args.adapter not in config.model.adapters:
        raise SystemExit(f"{args.cfg_path}: model.adapters has no '{args.adapter}' "
                         f"(known: {', '.join(config.model.adapters) or 'none'})")
    model = load_for_inference(config, torch.device("cpu"), low_resource=False)  # merging needs full weights
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".model.safetensors.tmp"  # renamed into place once complete
    save_file(merged_weights(model, args.adapter), partial)
    os.replace(partial, out / "model.safetensors")
    config.model.adapters = {}
    config.model.adapter = "auto"
    if config.model.parts.llm.mode == "lora":
        config.model.parts.llm.mode = "frozen"
        config.model.lora_r = 0
    config.model.ckpt = str(out.resolve())
    save_config(config, out / "config.yaml")
    merged = f"adapter '{args.adapter}'" if args.adapter else "the LLM's LoRA" if model.part_modes["llm"] == "lora" else "no LoRA"
    print(f"exported {out / 'model.safetensors'} with {merged} merged; chat with: python demo.py --cfg-path {out / 'config.yaml'}")


if __name__ == "__main__":
    main()
