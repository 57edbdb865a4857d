"""The language model: a transformers causal LM from a local folder, or random weights from a config.

Real runs point `llama_model` at a Llama-2 / Vicuna folder in Hugging Face format (never downloaded,
never `trust_remote_code`). Tests give `llama_config` (LlamaConfig arguments) plus a tokenizer folder,
which builds the same class with random weights, so both go through one code path afterwards.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from minigpt.common.config import resolve_path
from minigpt.models.tokenizer import load_tokenizer


def build_llm(llama_model: str | None, llama_config: dict | None, tokenizer_path: str | None,
              dtype: torch.dtype = torch.float32, load_in_8bit: bool = False, device_map=None):
    """-> (model, tokenizer). `load_in_8bit` quantises a folder's linear layers with bitsandbytes."""
    tokenizer = load_tokenizer(resolve_path(tokenizer_path or llama_model))
    if llama_model:
        path = resolve_path(llama_model)
        if not (Path(path) / "config.json").exists():
            raise FileNotFoundError(f"model.llama_model: '{path}' has no config.json (a Hugging Face model folder is expected)")
        kwargs = {"dtype": dtype, "local_files_only": True}
        if load_in_8bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            kwargs["device_map"] = device_map or {"": "cpu"}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        options = dict(llama_config)
        model_type = options.pop("model_type", "llama")
        options.setdefault("vocab_size", len(tokenizer))
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            options.setdefault(name, getattr(tokenizer, name))
        config = AutoConfig.for_model(model_type, **options)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the LLM embeds only "
                         f"{model.get_input_embeddings().num_embeddings}: they do not belong together")
    return model, tokenizer


def quantize_linear_layers(module: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Swap nn.Linear layers for bitsandbytes int8 ones in place (for LLMs built from config + checkpoint).

    A folder loads in 8-bit through `from_pretrained`; a model whose weights came from our own
    checkpoint is quantised here after loading, as bitsandbytes quantises when weights are assigned.
    """
    try:
        import bitsandbytes as bnb
    except ImportError as error:
        raise ImportError("8-bit loading needs bitsandbytes: pip install 'minigpt[gpu]'") from error
    for name, child in list(module.named_children()):
        if name in skip:
            continue
        if isinstance(child, nn.Linear):
            quantized = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                            has_fp16_weights=False, threshold=6.0)
            quantized.weight = bnb.nn.Int8Params(child.weight.data.to(torch.float16).contiguous(),
                                                 requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                quantized.bias = nn.Parameter(child.bias.data.to(torch.float16), requires_grad=False)
            setattr(module, name, quantized.to(child.weight.device))
        else:
            quantize_linear_layers(child, skip)
    return module
