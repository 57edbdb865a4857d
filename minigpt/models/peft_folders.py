"""LoRA as peft adapter folders (adapter_config.json + adapter_model.safetensors), both ways.

Saved, the LLM's LoRA opens with `PeftModel.from_pretrained(base_llm, folder)` and gives our LLM's logits.
Given as `model.llm_adapter`, a folder trained elsewhere (or exported here) starts our LLM's LoRA. Its
rank and target modules must be the config's, and its base model must be the config's LLM: an adapter
for another base is refused, naming both.

A task adapter (models/adapters.py) is one such folder for its LLM part, plus its LoRA on the vision
encoder and projector in `vision_projector.safetensors` (our module names, which peft ignores) and its
settings in `task_adapter.json`. `model.adapters.NAME.peft_folder` loads one back.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
VISION_PROJECTOR_WEIGHTS, TASK_ADAPTER_SETTINGS = "vision_projector.safetensors", "task_adapter.json"
PEFT_PREFIX = "base_model.model."  # peft's saved names: the base LLM's module path after it


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


def save_task_adapter(model, name: str, folder: str | Path, base_model: str) -> Path:
    """Task adapter `name` of `model` as a peft folder for its LLM part (named as peft saves LoRA on
    `base_model`), its vision and projector LoRA beside it, and its settings."""
    from peft import LoraConfig

    settings = model.adapters.configs[name]
    llm_part, other_part = {}, {}
    for key, value in model.adapters.named_weights(name).items():
        key = key.replace(f".{name}.", ".")  # peft's files do not name the adapter
        if key.startswith("llama_model."):
            llm_part[PEFT_PREFIX + key.removeprefix("llama_model.").removeprefix(PEFT_PREFIX)] = value.detach()
        else:
            other_part[key] = value.detach()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                      target_modules=list(settings.llm_target_modules), task_type="CAUSAL_LM",
                      base_model_name_or_path=base_model)
    lora.save_pretrained(str(folder))
    save_file({key: value.contiguous() for key, value in llm_part.items()}, folder / ADAPTER_WEIGHTS)
    save_file({key: value.contiguous() for key, value in other_part.items()}, folder / VISION_PROJECTOR_WEIGHTS)
    plain = OmegaConf.to_container(settings) if isinstance(settings, DictConfig) else dict(settings)
    (folder / TASK_ADAPTER_SETTINGS).write_text(json.dumps({key: value for key, value in plain.items()
                                                            if key != "peft_folder"}, indent=2) + "\n")
    return folder


def check_task_adapter_folder(folder: str | Path, name: str, settings) -> Path:
    """The folder, if save_task_adapter wrote it for an adapter with these `settings` (InputError naming
    the setting that differs; its tasks may differ, they only route requests)."""
    path = resolve_path(str(folder))
    for required in (ADAPTER_WEIGHTS, VISION_PROJECTOR_WEIGHTS, TASK_ADAPTER_SETTINGS):
        if not (path / required).exists():
            raise InputError(f"{folder}: not a task adapter folder (no {required}; `minigpt export --format peft` "
                             "writes one per adapter)")
    for field, value in json.loads((path / TASK_ADAPTER_SETTINGS).read_text()).items():
        if field in settings and field != "tasks" and settings[field] != value:
            raise InputError(f"{folder}: {field} is {value} there but model.adapters.{name}.{field} is "
                             f"{settings[field]}")
    return path


def load_task_adapter(model, name: str, folder: str | Path) -> None:
    """Put a folder written by save_task_adapter into task adapter `name`: every LoRA weight of that
    adapter must be there, with its shape."""
    path = check_task_adapter_folder(folder, name, model.adapters.configs[name])
    weights = {"llama_model." + key.removeprefix(PEFT_PREFIX): value
               for key, value in load_file(path / ADAPTER_WEIGHTS).items()}
    weights.update(load_file(path / VISION_PROJECTOR_WEIGHTS))
    own = model.adapters.named_weights(name)
    for key, param in own.items():
        plain = key.replace(f".{name}.", ".")
        stored = weights.get(re.sub(r"^llama_model\.base_model\.model\.", "llama_model.", plain))
        if stored is None or stored.shape != param.shape:
            found = "missing" if stored is None else f"of shape {tuple(stored.shape)}"
            raise InputError(f"{folder}: {plain} is {found}; adapter '{name}' has it of shape {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(stored)
