"""The LLM's LoRA as a peft adapter folder (adapter_config.json + adapter_model.safetensors), both ways.

Saved, the folder opens with `PeftModel.from_pretrained(base_llm, folder)` and gives our LLM's logits.
Given as `model.llm_adapter`, a folder trained elsewhere (or exported here) starts our LLM's LoRA. Its
rank and target modules must be the config's, and its base model must be the config's LLM: an adapter
for another base is refused, naming both.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from safetensors.torch import load_file

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def read_adapter_config(folder: str | Path) -> dict:
    path = resolve_path(str(folder)) / ADAPTER_CONFIG
    if not path.exists():
        raise InputError(f"{folder}: not a peft adapter folder (no {ADAPTER_CONFIG})")
    return json.loads(path.read_text())


def check_adapter_config(folder: str | Path, cfg: DictConfig) -> dict:
    """The folder's adapter_config.json, checked against the model config (InputError naming the field)."""
    adapter = read_adapter_config(folder)
    if adapter.get("peft_type", "LORA") != "LORA":
        raise InputError(f"{folder}: a {adapter['peft_type']} adapter; the LLM takes LoRA adapters")
    if adapter.get("r") != cfg.lora_r:
        raise InputError(f"{folder}: r is {adapter.get('r')} there but model.lora_r is {cfg.lora_r}")
    targets = adapter.get("target_modules") or []
    targets = sorted([targets] if isinstance(targets, str) else targets)
    if targets != sorted(cfg.lora_target_modules):
        raise InputError(f"{folder}: target_modules {targets} there but model.lora_target_modules is "
                         f"{sorted(cfg.lora_target_modules)}")
    base = adapter.get("base_model_name_or_path")
    if base and cfg.llama_model and Path(str(base)).name != Path(str(cfg.llama_model)).name:
        raise InputError(f"{folder}: an adapter for base model '{base}', but model.llama_model is "
                         f"'{cfg.llama_model}'")
    return adapter


def load_llm_adapter(llm, folder: str | Path, cfg: DictConfig) -> None:
    """Put the folder's LoRA weights into `llm` (a peft model built from the same config)."""
    from peft import set_peft_model_state_dict

    check_adapter_config(folder, cfg)
    weights = load_file(resolve_path(str(folder)) / ADAPTER_WEIGHTS)
    try:
        result = set_peft_model_state_dict(llm, weights)
    except RuntimeError as error:  # a shape that differs: another base model's layers
        raise InputError(f"{folder}: its weights do not fit this LLM ({str(error).splitlines()[0]})") from None
    unexpected = [key for key in result.unexpected_keys if "lora_" in key]
    if unexpected:
        raise InputError(f"{folder}: weights this LLM has no place for, e.g. {unexpected[0]}")


def save_llm_adapter(llm, folder: str | Path, base_model: str) -> Path:
    """Write the LLM's LoRA as a peft folder whose base_model_name_or_path is `base_model`."""
    folder = Path(folder)
    llm.save_pretrained(str(folder))
    config_path = folder / ADAPTER_CONFIG
    adapter = json.loads(config_path.read_text())
    adapter["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(adapter, indent=2) + "\n")
    return folder
