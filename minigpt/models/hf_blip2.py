"""A transformers BLIP-2 folder (`Blip2ForConditionalGeneration.save_pretrained`, e.g. a hub snapshot of
Salesforce/blip2-opt-2.7b) as the source of the EVA ViT and the Q-Former.

`model.vit_weights` and `model.q_former_model` may name such a folder instead of the released .pth files.
Its keys are renamed to the ones those files use (VISION_NAMES below, the reverse of transformers' own
BLIP-2 conversion; newer transformers join the q and v biases, with a zero key bias, into one qkv bias, which
is split again), then the usual loaders take over. Its qformer.* and query_tokens load into our Q-Former
(the same transformers class), its post_layernorm into our ln_vision.

Its language model and language_projection (sized for OPT or Flan-T5) are not used. The other way,
`to_blip2_vision` and `blip2_vision_config` describe our ViT as a transformers Blip2VisionModel, which is
how an export to transformers writes it (minigpt/ops/hf_export.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from timm.models.eva import Eva
from torch import nn
from transformers import Blip2VisionConfig

from minigpt.common.errors import CheckpointError
from minigpt.common.fetch import SAFETENSORS_INDEX, shards_holding

# The tensors each setting takes from such a folder; a folder named by a hub id is fetched with only the
# shards holding them (config/sources.py), and only those shards are read.
VISION_PREFIXES = ("vision_model.",)
QFORMER_PREFIXES = ("qformer.", "query_tokens", "vision_model.post_layernorm.")

# Our ViT's parameter names (timm EVA, as the released file writes them, and ln_vision) beside a transformers
# Blip2VisionModel's, one table read in both directions: a folder's names become ours when it is loaded, ours
# become its names when exported. `{n}` is a block's number; a name ending in "." is a prefix (every parameter
# of that module), any other a whole name. The first row that matches renames a key, so a longer prefix comes
# before a shorter one (attn.proj before attn).
VISION_NAMES = [
    ("cls_token", "embeddings.class_embedding"),
    ("patch_embed.proj.", "embeddings.patch_embedding."),
    ("pos_embed", "embeddings.position_embedding"),
    ("blocks.{n}.norm1.", "encoder.layers.{n}.layer_norm1."),
    ("blocks.{n}.norm2.", "encoder.layers.{n}.layer_norm2."),
    ("blocks.{n}.attn.proj.", "encoder.layers.{n}.self_attn.projection."),
    ("blocks.{n}.attn.", "encoder.layers.{n}.self_attn."),
    ("blocks.{n}.mlp.", "encoder.layers.{n}.mlp."),
    ("ln_vision.", "post_layernorm."),
]


def _rename_rules(to_blip2: bool) -> list[tuple[re.Pattern, str]]:
    """VISION_NAMES as (pattern, replacement) pairs, from our names (`to_blip2`) or from transformers'."""
    rules = []
    for ours, theirs in VISION_NAMES:
        source, target = (ours, theirs) if to_blip2 else (theirs, ours)
        pattern = "^" + re.escape(source).replace(re.escape("{n}"), r"(\d+)") + ("" if source.endswith(".") else "$")
        rules.append((re.compile(pattern), target.replace("{n}", r"\1")))
    return rules


TO_BLIP2_VISION, FROM_BLIP2_VISION = _rename_rules(to_blip2=True), _rename_rules(to_blip2=False)


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        renamed, count = pattern.subn(replacement, key)
        if count:
            return renamed
    return key


def is_hf_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def _weight_files(folder: Path, prefixes: tuple[str, ...]) -> list[Path]:
    """The files holding the tensors named with `prefixes`: of a sharded folder, only their shards (the
    others may not have been fetched)."""
    index = folder / SAFETENSORS_INDEX
    if index.exists():
        return [folder / name for name in shards_holding(index, prefixes)]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no safetensors weights (model.safetensors or an index)")
    return files


def read_blip2_folder(folder: str | Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The folder's tensors whose names start with one of `prefixes`; a folder of another architecture
    is refused, naming its model_type."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "blip-2":
        raise CheckpointError(f"{folder}: a transformers folder of model_type {config.get('model_type')!r} "
                              f"({', '.join(config.get('architectures') or ['no architectures'])}); a BLIP-2 folder "
                              "(model_type 'blip-2') is expected")
    weights = {}
    for file in _weight_files(folder, prefixes):
        with safe_open(str(file), framework="pt") as reader:
            for key in reader.keys():
                if key.startswith(prefixes):
                    weights[key] = reader.get_tensor(key)
    return weights


def vision_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The ViT's weights in the released EVA file's names (ln_vision not among them)."""
    weights = {}
    for key, value in read_blip2_folder(folder, VISION_PREFIXES).items():
        key = key.removeprefix("vision_model.")
        if key.startswith("post_layernorm."):
            continue
        key = _rename(key, FROM_BLIP2_VISION)
        if key.endswith("attn.qkv.bias"):  # newer transformers join q_bias, a zero k bias and v_bias
            weights.update(split_qkv_bias(key, value, folder))
        else:
            weights[key] = value
    return weights


def split_qkv_bias(key: str, bias: torch.Tensor, folder) -> dict[str, torch.Tensor]:
    """[3C] -> q_bias [C], v_bias [C]; EVA has no key bias, so a non-zero one is not this ViT."""
    query, key_bias, value = bias.chunk(3)
    if key_bias.abs().max() > 0:
        raise CheckpointError(f"{folder}: {key}: the key bias is not zero, which an EVA / BLIP-2 ViT never has")
    block = key.removesuffix("qkv.bias")
    return {f"{block}q_bias": query, f"{block}v_bias": value}


def qformer_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Q-Former, query tokens and ln_vision in our module names."""
    weights = read_blip2_folder(folder, QFORMER_PREFIXES)
    return {key.replace("vision_model.post_layernorm.", "ln_vision.").replace("qformer.", "Qformer.", 1): value
            for key, value in weights.items()}


def to_blip2_vision(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ViT's weights (timm EVA names) and ln_vision's as a Blip2VisionModel's: q_bias, a zero key bias
    and v_bias joined into one qkv bias, ln_vision as post_layernorm."""
    renamed = {_rename(key, TO_BLIP2_VISION): value for key, value in weights.items()}
    for key in [key for key in renamed if key.endswith("self_attn.q_bias")]:
        attention = key.removesuffix("q_bias")
        query, value = renamed.pop(key), renamed.pop(f"{attention}v_bias")
        renamed[f"{attention}qkv.bias"] = torch.cat([query, torch.zeros_like(query), value])  # [3C]
    return renamed


def blip2_vision_config(encoder: Eva, ln_vision: nn.LayerNorm) -> Blip2VisionConfig:
    """Our ViT's shape as a Blip2VisionConfig (same architecture: pre-norm blocks, GELU MLP, q and v biases).
    One layer_norm_eps serves the blocks and post_layernorm there: it is the blocks' 1e-6, where ln_vision has
    1e-5 (as in transformers' own BLIP-2 conversion), which moves near-uniform tokens' features slightly."""
    block = encoder.blocks[0]
    return Blip2VisionConfig(
        hidden_size=encoder.embed_dim, intermediate_size=block.mlp.fc1.out_features,
        num_hidden_layers=len(encoder.blocks), num_attention_heads=block.attn.num_heads,
        image_size=encoder.patch_embed.img_size[0], patch_size=encoder.patch_embed.patch_size[0],
        hidden_act="gelu", layer_norm_eps=block.norm1.eps, qkv_bias=True)
