"""Export a model with its LoRA folded into the base weights, as one plain checkpoint; or its LoRA (the LLM's,
and each task adapter's) as peft adapter folders.

    minigpt export --cfg-path eval_configs/X.yaml --out output/merged [--adapter grounding]
    minigpt export --cfg-path eval_configs/X.yaml --out output/peft --format peft

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
from transformers import AutoModelForCausalLM

from minigpt.common.checkpoint import save_config
from minigpt.common.errors import ConfigError
from minigpt.inference.loading import Placement, load_model
from minigpt.models.peft_folders import save_llm_adapter, save_task_adapter


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
    model = load_model(config, Placement(low_resource=False)).model  # merging needs full weights
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


def write_peft_folders(model, config: DictConfig, out: str | Path) -> dict[str, Path]:
    """The LLM's LoRA as out/llm_adapter and each task adapter as out/adapters/NAME (peft folders), the
    base LLM as out/base_llm when the config builds it from random weights (a folder LLM is its own base),
    and every other weight in out/model.safetensors with a config.yaml that loads them all back."""
    llm_lora = model.part_modes["llm"] == "lora"
    if not llm_lora and not model.adapters:
        raise ConfigError("--format", "peft", "the model has no LoRA to export (parts.llm.mode is not lora and "
                                              "model.adapters is empty)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    base = config.model.llama_model
    if not base:
        written["base_llm"] = out / "base_llm"
        base = str(written["base_llm"].resolve())
    if llm_lora:
        written["llm_adapter"] = save_llm_adapter(model.llama_model, out / "llm_adapter", base)
    for name in model.adapters.names if model.adapters else []:
        written[f"adapter {name}"] = save_task_adapter(model, name, out / "adapters" / name, base)
    weights = model.adapters.merged_state_dict(None) if model.adapters else model.state_dict()  # without adapters
    partial = out / ".model.safetensors.tmp"
    save_file({key: value.contiguous() for key, value in weights.items() if not key.startswith("llama_model.")},
              partial)
    os.replace(partial, out / "model.safetensors")
    if "base_llm" in written:
        save_base_llm(model, weights, written["base_llm"])
    config = config.copy()
    config.model.ckpt = str(out.resolve())
    if llm_lora:
        config.model.llm_adapter = str(written["llm_adapter"].resolve())
    for name in model.adapters.names if model.adapters else []:
        config.model.adapters[name].peft_folder = str(written[f"adapter {name}"].resolve())
    if "base_llm" in written:  # the LLM now loads from its folder
        config.model.llama_model = config.model.tokenizer = base
        config.model.llama_config = {}
    save_config(config, out / "config.yaml")
    return written


def save_base_llm(model, weights: dict[str, torch.Tensor], folder: Path) -> None:
    """The LLM without any LoRA as a transformers folder, with the tokenizer."""
    if model.part_modes["llm"] == "lora":  # peft's unload leaves the base LLM without LoRA layers
        llm = model.llama_model.unload()
    else:  # task adapters sit inside the LLM's layers: a clean copy takes the base weights
        llm = AutoModelForCausalLM.from_config(model.llama_model.config)
        llm.load_state_dict({key.removeprefix("llama_model."): value for key, value in weights.items()
                             if key.startswith("llama_model.")})
    llm.save_pretrained(str(folder))
    model.tokenizer.save_pretrained(str(folder))


def export_peft(config: DictConfig, out: str | Path) -> dict[str, Path]:
    model = load_model(config, Placement(low_resource=False)).model
    return write_peft_folders(model, config, out)
