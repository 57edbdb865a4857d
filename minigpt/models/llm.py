"""The language model: a transformers causal LM from a local folder, or random weights from a config.

Real runs point `llama_model` at a Llama-2 / Vicuna folder in Hugging Face format (a hub name is fetched
by the config loader, config/sources.py, so a local folder is all this module sees; Python code shipped
in the folder runs only with `model.trust_remote_code: true`). Tests give
`llama_config` (LlamaConfig arguments) plus a tokenizer folder, which builds the same class with
random weights, so both go through one code path afterwards.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from minigpt.common.errors import InputError, InputFileNotFoundError, MissingExtraError
from minigpt.common.paths import resolve_model_folder
from minigpt.models.pretrained import LoadReport, summarize
from minigpt.models.tokenizer import load_tokenizer


def build_llm(llama_model: str | None, llama_config: dict | None, tokenizer_path: str | None,
              dtype: torch.dtype = torch.float32, quantize_bits: int | None = None, device_map=None,
              trust_remote_code: bool = False, attn_implementation: str = "sdpa"):
    """-> (model, tokenizer). `quantize_bits` (8: LLM.int8, 4: NF4) quantises a folder's linear layers
    with bitsandbytes as they load."""
    tokenizer = load_tokenizer(resolve_model_folder(tokenizer_path or llama_model), trust_remote_code)
    if llama_model:
        path = resolve_model_folder(llama_model)
        if not (Path(path) / "config.json").exists():
            raise InputFileNotFoundError(f"model.llama_model: '{path}' has no config.json (a Hugging Face model folder is expected)")
        kwargs = {"dtype": dtype, "local_files_only": True, "trust_remote_code": trust_remote_code,
                  "attn_implementation": attn_implementation}
        if quantize_bits:
            from transformers import BitsAndBytesConfig

            require_bitsandbytes(quantize_bits)
            kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_8bit=True) if quantize_bits == 8 else
                                             BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                bnb_4bit_compute_dtype=dtype))
            kwargs["device_map"] = device_map or {"": "cpu"}
        model, report = with_supported_attention(
            lambda attention: load_llm_folder(path, **{**kwargs, "attn_implementation": attention}),
            attn_implementation, path)
        print(report, file=sys.stderr)
    else:
        options = dict(llama_config)
        model_type = options.pop("model_type", "llama")
        options.setdefault("vocab_size", len(tokenizer))
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            options.setdefault(name, getattr(tokenizer, name))
        config = AutoConfig.for_model(model_type, **options)
        model = with_supported_attention(lambda attention: AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=attention), attn_implementation, model_type)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens but the LLM embeds only "
                         f"{model.get_input_embeddings().num_embeddings}: they do not belong together")
    return model, tokenizer


def with_supported_attention(build, attn_implementation: str, name: str):
    """`build(attn_implementation)`, or, for an architecture without SDPA kernels (Gemma 2's soft-capped
    attention), `build("eager")` with a note: the attention it has rather than a refusal."""
    try:
        return build(attn_implementation)
    except ValueError as error:
        if attn_implementation != "sdpa" or "does not support an attention implementation" not in str(error):
            raise
        print(f"{name}: no SDPA attention in this architecture; eager attention is used", file=sys.stderr)
        return build("eager")


def load_llm_folder(path: str, **kwargs) -> tuple[nn.Module, LoadReport]:
    """`from_pretrained`, made strict: transformers would initialise a missing or wrongly shaped weight
    at random and only warn, and a chat with a half-random Vicuna fails in ways hard to trace back."""
    try:
        model, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True,
                                                           ignore_mismatched_sizes=True, **kwargs)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise InputError(f"model.llama_model: {path} needs the Python code it ships (auto_map in its config.json) to "
                         "load; set model.trust_remote_code: true if you trust that code") from None
    own = model.state_dict()
    report = LoadReport(str(path), missing=sorted(info["missing_keys"]), unused=sorted(info["unexpected_keys"]))
    report.loaded = len(own) - len(report.missing)
    report.dropped = sorted(set(folder_weight_names(path)) - own.keys() - info["unexpected_keys"])
    if info["mismatched_keys"]:
        key, file_shape, model_shape = sorted(info["mismatched_keys"])[0]
        raise InputError(f"model.llama_model: {path}: {key}: shape {tuple(file_shape)} in the folder, "
                         f"{tuple(model_shape)} in its config.json ({len(info['mismatched_keys'])} such weights)")
    if report.missing:
        raise InputError(f"model.llama_model: {path}: missing {len(report.missing)} weights the model needs: "
                         f"{summarize(report.missing)} (an incomplete download or a different architecture?)")
    return model, report


def folder_weight_names(path: str | Path) -> list[str]:
    """The tensor names a model folder holds, from its index or its safetensors header (without reading
    the tensors); [] for a lone pytorch_model.bin, whose names need the whole file read."""
    path = Path(path)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).exists():
            return list(json.loads((path / index).read_text()).get("weight_map", {}))
    if (path / "model.safetensors").exists():
        with safe_open(str(path / "model.safetensors"), framework="pt") as weights:
            return list(weights.keys())
    return []


def require_bitsandbytes(bits: int):
    """The bitsandbytes module, or an error that says how to get it (model.low_resource needs it)."""
    try:
        import bitsandbytes
    except ImportError as error:
        raise MissingExtraError(f"model.low_resource: {bits}-bit loading", "bitsandbytes", "gpu") from error
    return bitsandbytes


def dequantized_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: float weight [out, in]} of every bitsandbytes layer in `module`: an NF4 weight
    dequantised, an int8 one times its row scales (which its first forward moves into the layer's state).
    What a LoRA on top of them was trained with."""
    weights = {}
    for name, layer in module.named_modules():
        weight = getattr(layer, "weight", None)
        if hasattr(layer, "base_layer"):  # peft's LoRA wrapper, whose weight is its base layer's
            continue
        if type(weight).__name__ == "Params4bit":
            import bitsandbytes

            weights[f"{name}.weight"] = bitsandbytes.functional.dequantize_4bit(weight.data, weight.quant_state)
        elif type(weight).__name__ == "Int8Params":
            scales = weight.SCB if getattr(weight, "SCB", None) is not None else layer.state.SCB
            weights[f"{name}.weight"] = weight.data.float() * scales.float().unsqueeze(1) / 127
    return weights


def quantize_linear_layers(module: nn.Module, bits: int = 8, compute_dtype: torch.dtype = torch.float32,
                           skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Swap nn.Linear layers for bitsandbytes ones in place: int8 (bits=8) or NF4 (bits=4, computing in
    `compute_dtype`). For LLMs built from config + checkpoint: a folder is quantised by `from_pretrained`
    as it loads; bitsandbytes quantises when the weights are assigned and moved.
    """
    bnb = require_bitsandbytes(bits)
    for name, child in list(module.named_children()):
        if name in skip:
            continue
        if not isinstance(child, nn.Linear):
            quantize_linear_layers(child, bits, compute_dtype, skip)
            continue
        weight = child.weight.data.contiguous()
        if bits == 8:
            quantized = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                            has_fp16_weights=False, threshold=6.0)
            quantized.weight = bnb.nn.Int8Params(weight.to(torch.float16), requires_grad=False, has_fp16_weights=False)
            bias_dtype = torch.float16
        else:
            quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=compute_dtype, quant_type="nf4")
            quantized.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4")
            bias_dtype = compute_dtype
        if child.bias is not None:
            quantized.bias = nn.Parameter(child.bias.data.to(bias_dtype), requires_grad=False)
        setattr(module, name, quantized.to(child.weight.device))
    return module


def check_lora_targets(llm: nn.Module, targets: list[str]) -> None:
    """Refuse LoRA targets the LLM has no layer for, naming the linear layers it has: families name their
    projections differently (Phi-3 fuses q, k and v into qkv_proj), and peft's own error names none."""
    linear_names = sorted({name.rsplit(".", 1)[-1] for name, module in llm.named_modules()
                           if isinstance(module, nn.Linear) and "." in name})
    names = [name for name, _ in llm.named_modules()]
    missing = [target for target in targets if not any(name == target or name.endswith("." + target) for name in names)]
    if missing:
        raise InputError(f"model.lora_target_modules: the LLM ({llm.config.model_type}) has no layer named "
                         f"{', '.join(missing)}; its linear layers are {', '.join(linear_names)}")

