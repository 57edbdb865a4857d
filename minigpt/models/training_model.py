"""The model a training run builds: its checkpoint loaded, and under `model.low_resource` its LLM quantised
with LoRA on top (QLoRA).

    model:
      low_resource: true       # the LLM's linear layers in NF4 (low_resource_bits: 4) or int8 (8)
      low_resource_bits: 4
      parts:
        llm: {mode: lora}      # LoRA trains on top of the frozen quantised layers (or frozen: none trains)

An LLM folder is quantised by transformers as it loads, onto this rank's own GPU (under torchrun each
rank holds its own copy); LoRA then wraps the quantised layers. An LLM built from `llama_config` gets its
weights from `model.ckpt` first, and is quantised after, then wrapped, the same path. Its checkpoints
hold the quantised weights dequantised (models/llm.py), which is what the LoRA was trained on top of.
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig

from minigpt.common import registry
from minigpt.models.llm import quantize_linear_layers
from minigpt.models.weights import load_weights


def build_for_training(cfg: DictConfig, device: torch.device, compute_dtype: torch.dtype):
    """-> (model, the checkpoint's load report or None)."""
    cfg = cfg.copy()
    if device.type == "cuda":
        cfg.device_8bit = device.index or 0  # a quantised LLM goes to this rank's GPU, not to GPU 0
    quantize_after_load = cfg.low_resource and not cfg.llama_model
    llm_mode = cfg.parts.llm.mode
    if quantize_after_load:
        cfg.parts.llm.mode = "frozen"  # LoRA goes on once the layers are quantised
    model = registry.get("model", cfg.arch).from_config(cfg, device, compute_dtype)
    report = load_weights(model, cfg.ckpt) if cfg.ckpt else None
    if quantize_after_load:
        quantize_linear_layers(model.llama_model, cfg.low_resource_bits, compute_dtype)
        model.set_part_modes({"llm": llm_mode}, cfg)
    return model, report
