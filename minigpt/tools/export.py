"""Export a model with its LoRA folded into the base weights, as one plain checkpoint.

    minigpt export --cfg-path eval_configs/X.yaml --out output/merged [--adapter grounding]

The eval config describes the model as it was trained (`model.ckpt`, LoRA on the LLM through
`parts.llm.mode: lora`, or task adapters in `model.adapters`). Without `--adapter` the LLM's LoRA is
merged (W + B @ A * scale, peft's `merge_and_unload`); with it, that task adapter is. The output folder
holds `model.safetensors` (every weight, plain names) and a `config.yaml` without LoRA or adapters whose
`model.ckpt` points at it, ready for `minigpt chat --cfg-path`; its logits match the unmerged model's.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from minigpt.common.checkpoint import save_config
from minigpt.common.errors import ConfigError
from minigpt.models.inference import load_for_inference


def merged_weights(model, adapter: str | None) -> dict[str, torch.Tensor]:
    """Every weight of `model` with the chosen LoRA folded in."""
    if adapter:
        return model.adapters.merged_state_dict(adapter)
    if model.part_modes["llm"] == "lora":
        model.llama_model = model.llama_model.merge_and_unload()
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def export_merged(config: DictConfig, out: str | Path, adapter: str | None = None) -> str:
    """Write the merged checkpoint and its config into `out`; -> what was merged."""
    if adapter and adapter not in config.model.adapters:
        raise ConfigError("--adapter", adapter, f"model.adapters has no '{adapter}' "
                                                f"(known: {', '.join(config.model.adapters) or 'none'})")
    model = load_for_inference(config, torch.device("cpu"), low_resource=False)  # merging needs full weights
    merged = f"adapter '{adapter}'" if adapter else "the LLM's LoRA" if model.part_modes["llm"] == "lora" else "no LoRA"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".model.safetensors.tmp"  # renamed into place once complete
    save_file(merged_weights(model, adapter), partial)
    os.replace(partial, out / "model.safetensors")
    config = config.copy()
    config.model.adapters = {}
    config.model.adapter = "auto"
    if config.model.parts.llm.mode == "lora":
        config.model.parts.llm.mode = "frozen"
        config.model.lora_r = 0
    config.model.ckpt = str(out.resolve())
    save_config(config, out / "config.yaml")
    return merged
