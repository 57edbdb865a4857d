"""The model a config describes, built on PyTorch's meta device: every part at its real shape, in the
dtype it would have on a GPU, with its parts' modes (LoRA, task adapters), but no memory and no weights.

A 7B or 13B model builds in about a second. Nothing the config names is read: not the vision tower's or
Q-Former's weights, not `model.ckpt`, not the LLM's weights (a transformers vision tower's shape comes from
its folder's config.json and preprocessor_config.json, fetched alone as the LLM's config.json is). The
LLM's shape comes from its config.json alone, found in this order:

    an explicit config.json (or a folder holding one)   minigpt plan --llm-config
    model.llama_config                                  (inline, as the tiny configs give it)
    model.llama_model                                   a local folder holding config.json (only that file
                                                        need be there), or a hub id: from the local cache,
                                                        else that one file fetched

What the planned model says about memory is summed up in ModelStats (plan_memory.py turns it into bytes).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, Blip2QFormerConfig, Blip2QFormerModel, PretrainedConfig

from minigpt.common import registry
from minigpt.common.errors import InputError
from minigpt.common.fetch import hub_file, parse_source
from minigpt.common.paths import resolve_model_folder, resolve_path
from minigpt.models.image_tokens import image_token_count, input_image_size
from minigpt.models.minigpt import MiniGPT, vit_dtype
from minigpt.models.sub_images import views_per_image
from minigpt.models.tokenizer import load_tokenizer
from minigpt.models.vision_mix import mixed_width
from minigpt.models.vision_towers import build_vision_side


@dataclass
class PartCount:
    """One part's parameters: how many train, how many are frozen, and the bytes their weights take."""

    trainable: int = 0
    frozen: int = 0
    weight_bytes: float = 0.0
    dtypes: set[str] = field(default_factory=set)


@dataclass
class LayerStack:
    """A stack of transformer blocks, as the activation estimate needs it."""

    width: int  # hidden size
    mlp_width: int  # the MLP's inner size
    depth: int  # blocks
    gated_mlp: bool  # SwiGLU (three matrices) or a plain GELU MLP (two)
    linear_trained: bool  # its own linear weights train (mode full), so their inputs are kept for backward
    trains: bool  # anything in or before it needs gradients through it (else it runs under no_grad)
    element_bytes: int  # bytes of one hidden-state element


@dataclass
class ModelStats:
    parts: dict[str, PartCount]
    trainable_bytes: float  # the trainable parameters' own bytes (their gradients and AdamW moments follow)
    trainable_params: int
    total_params: int
    llm: LayerStack
    llm_config: PretrainedConfig
    lora_targets: int  # LoRA-adapted linear layers per LLM block
    vision: LayerStack
    vision_tokens: int  # tokens per view the ViT runs over (patches + CLS and registers)
    views_per_image: int
    image_tokens: int  # image-slot tokens per image in the prompt
    quantized_bits: int | None


def llm_config_of(cfg: DictConfig, llm_config_path: str | None = None) -> PretrainedConfig:
    """The LLM's transformers config, without any of its weights (see the module docstring for the order)."""
    if llm_config_path:
        return _config_from_json(_config_json(resolve_path(llm_config_path), "--llm-config"))
    if cfg.llama_config:
        options = dict(cfg.llama_config)
        model_type = options.pop("model_type", "llama")
        if "vocab_size" not in options and cfg.tokenizer and resolve_model_folder(cfg.tokenizer).is_dir():
            options["vocab_size"] = len(load_tokenizer(resolve_model_folder(cfg.tokenizer), cfg.trust_remote_code))
        return AutoConfig.for_model(model_type, **options)
    if not cfg.llama_model:
        raise InputError("model.llama_model: not set, and no model.llama_config: the plan needs the LLM's shape")
    source = parse_source(str(cfg.llama_model), want="folder")
    if source.kind == "hub":  # the cached config.json, else that one file fetched (not the weights)
        folder = hub_file(source.repo_id, "config.json", source.revision).parent
    else:
        folder = resolve_model_folder(cfg.llama_model)
    return _config_from_json(_config_json(folder, "model.llama_model"))


def _config_json(path: Path, key: str) -> Path:
    found = path / "config.json" if path.is_dir() else path
    if not found.is_file():
        raise InputError(f"{key}: '{path}' holds no config.json; the plan reads only that file of the LLM: give a "
                         "folder holding it (--options model.llama_model=DIR) or the file itself (--llm-config FILE)")
    return found


def _config_from_json(path: Path) -> PretrainedConfig:
    options = json.loads(path.read_text())
    try:
        return AutoConfig.for_model(options.pop("model_type", "llama"), **options)
    except ValueError as error:  # an architecture transformers does not know (code shipped with the model)
        raise InputError(f"{path}: {error}") from None


def planned_model(cfg: DictConfig, llm_config: PretrainedConfig, compute_dtype: torch.dtype,
                  on_gpu: bool = True) -> tuple[MiniGPT, set[int]]:
    """-> (the model on the meta device, the ids of the LLM weights that `model.low_resource` quantises).
    The dtypes follow MiniGPT._build_parts and _place: frozen parts in `compute_dtype` (the vision side in
    `vit_precision`) on a GPU, trained ones in float32; LoRA and task adapters in float32."""
    vision_frozen = cfg.parts.vision_encoder.mode == "frozen"
    llm_dtype = compute_dtype if (on_gpu and cfg.parts.llm.mode != "full") else torch.float32
    attention = "eager" if cfg.attn_implementation == "eager" else "sdpa"  # the same shapes as flash attention
    with torch.device("meta"):
        visual_encoder, ln_vision, extra_encoders = build_vision_side(cfg, with_weights=False)
        qformer = None
        if cfg.has_qformer:
            width = mixed_width(visual_encoder, extra_encoders)
            qformer = Blip2QFormerModel(Blip2QFormerConfig(encoder_hidden_size=width, **dict(cfg.qformer_config)))
        llm = AutoModelForCausalLM.from_config(llm_config, dtype=llm_dtype, attn_implementation=attention)
        quantized = {id(module.weight) for name, module in llm.named_modules()
                     if isinstance(module, nn.Linear) and not name.endswith("lm_head")} if cfg.low_resource else set()
        model = registry.get("model", cfg.arch)(
            visual_encoder, ln_vision, llm, tokenizer=None, template=None, num_image_tokens=image_token_count(cfg),
            input_size=input_image_size(cfg), qformer=qformer, num_query_token=cfg.num_query_token,
            max_context_len=cfg.max_context_len, extra_encoders=extra_encoders, proj_type=cfg.proj_type,
            sub_image_grid=cfg.sub_image_grid)
        modes = {part: cfg.parts[part].mode for part in cfg.parts}
        modes.update({f"extra_encoder_{index}": extra.mode for index, extra in enumerate(cfg.extra_encoders)})
        model.set_part_modes(modes, cfg)
        if cfg.adapters:
            model.attach_adapters(cfg.adapters, cfg.adapter)
    if on_gpu and vision_frozen:
        model.visual_encoder.to(vit_dtype(cfg))
    for extra, extra_cfg in zip(model.extra_encoders, cfg.extra_encoders):
        extra.model.to(vit_dtype(cfg) if (on_gpu and extra_cfg.mode == "frozen") else torch.float32)
    return model, quantized


def quantized_bytes(param: nn.Parameter, bits: int) -> float:
    """bitsandbytes' storage: LLM.int8 one byte a weight plus a float32 scale per row; NF4 half a byte plus
    a float32 absmax per block of 64 weights (transformers' default: no double quantisation)."""
    if bits == 8:
        return param.numel() + 4 * param.shape[0]
    return param.numel() / 2 + 4 * param.numel() / 64


def model_stats(model: MiniGPT, cfg: DictConfig, quantized: set[int]) -> ModelStats:
    """Counts and bytes per part, and the shapes the activation estimate needs."""
    bits = cfg.low_resource_bits if quantized else None
    parts = {}
    for part, items in model.part_modules().items():
        count = PartCount()
        for param in {id(p): p for item in items for p in _params(item)}.values():
            quantize = id(param) in quantized
            count.weight_bytes += quantized_bytes(param, bits) if quantize else param.numel() * param.element_size()
            count.dtypes.add(f"int{bits}" if quantize and bits == 8 else "nf4" if quantize else str(param.dtype)[6:])
            if param.requires_grad:
                count.trainable += param.numel()
            else:
                count.frozen += param.numel()
        parts[part] = count
    trainable = [p for p in model.parameters() if p.requires_grad]
    return ModelStats(parts=parts, trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
                      trainable_params=sum(p.numel() for p in trainable),
                      total_params=sum(p.numel() for p in model.parameters()),
                      llm=_llm_stack(model, cfg), llm_config=model.llama_model.config,
                      lora_targets=len(cfg.lora_target_modules) if cfg.parts.llm.mode == "lora" else 0,
                      vision=_vision_stack(model, cfg), vision_tokens=model.visual_encoder.sequence_length,
                      views_per_image=views_per_image(cfg.sub_image_grid), image_tokens=image_token_count(cfg),
                      quantized_bits=bits)


def _params(item: nn.Module | nn.Parameter) -> list[nn.Parameter]:
    return [item] if isinstance(item, nn.Parameter) else list(item.parameters())


def _llm_stack(model: MiniGPT, cfg: DictConfig) -> LayerStack:
    config = model.llama_model.config
    embeddings = model.llama_model.get_input_embeddings().weight
    return LayerStack(width=config.hidden_size, mlp_width=config.intermediate_size, depth=config.num_hidden_layers,
                      gated_mlp=True, linear_trained=cfg.parts.llm.mode == "full", trains=True,
                      element_bytes=embeddings.element_size())


def _vision_stack(model: MiniGPT, cfg: DictConfig) -> LayerStack:
    tower = model.visual_encoder
    return LayerStack(width=tower.num_features, mlp_width=tower.mlp_width, depth=tower.depth,
                      gated_mlp=False, linear_trained=cfg.parts.vision_encoder.mode == "full",
                      trains=any(p.requires_grad for p in tower.parameters()),  # (full, or a task adapter in it)
                      element_bytes=next(tower.parameters()).element_size())
