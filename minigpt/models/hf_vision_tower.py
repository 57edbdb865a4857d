"""Vision towers from transformers folders: CLIP, SigLIP (SigLIP 2 at a fixed resolution, whose folders
say model_type siglip, included) and DINOv2 (with or without register tokens).

A folder (a hub id is fetched into one when the config loads, config/sources.py) holds config.json, the
weights, and preprocessor_config.json: the tower's image size (its crop size, else its resize size) and
mean / std come from that file, so images reach the tower as its own processor would give them, but for
the crop: our processors resize the whole image to the square.

The tower's tokens are its `last_hidden_state` (CLIP: the last block's raw output; SigLIP and DINOv2: after
their final norm), or with `vit_layer` the raw output of one block, as LLaVA takes CLIP's penultimate
(-2 is `hidden_states[-2]`). The blocks after it are never built, the final norm is left out, and so is
what only the pooled output uses (CLIP's post_layernorm, SigLIP's attention-pooling head, DINOv2's mask
token): under DDP a trained tower's weights that get no gradient fail the step.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import CLIPVisionModel, Dinov2Model, Dinov2WithRegistersModel, PreTrainedModel, SiglipVisionModel

from minigpt.common.errors import InputError
from minigpt.models.pretrained import LoadReport, summarize

PROCESSOR_FILE = "preprocessor_config.json"


class VitLayerError(InputError):
    """`model.vit_layer` names a block the tower does not have."""


@dataclass(frozen=True)
class Family:
    """How one transformers vision model gives its tokens."""

    model_class: type[PreTrainedModel]
    class_token: bool  # a CLS token before the patches (and its register tokens, if any, after it)
    final_norm: str | None = None  # the norm over last_hidden_state, left out when vit_layer picks a block
    unused: tuple[str, ...] = ()  # what the tokens never pass through (pooling, a masking token): left out
    takes_interpolate_flag: bool = True  # CLIP and SigLIP resample position embeddings only when asked


CLIP = Family(CLIPVisionModel, class_token=True, unused=("post_layernorm",))
SIGLIP = Family(SiglipVisionModel, class_token=False, final_norm="post_layernorm", unused=("head",))
DINOV2 = Family(Dinov2Model, class_token=True, final_norm="layernorm", unused=("embeddings.mask_token",),
                takes_interpolate_flag=False)  # (DINOv2 always resamples them)
FAMILIES = {  # config.json's model_type -> family; a whole CLIP / SigLIP folder gives its vision tower
    "clip": CLIP, "clip_vision_model": CLIP,
    "siglip": SIGLIP, "siglip_vision_model": SIGLIP,
    "dinov2": DINOV2,
    "dinov2_with_registers": Family(Dinov2WithRegistersModel, class_token=True, final_norm="layernorm",
                                    unused=("embeddings.mask_token",), takes_interpolate_flag=False),
}
NOT_SUPPORTED = {
    "siglip2": "SigLIP 2's NaFlex folders (model_type siglip2) take patch sequences of varying length, not a "
               "square image; use a fixed-resolution SigLIP 2 folder (model_type siglip, e.g. "
               "google/siglip2-so400m-patch14-384)",
}


@dataclass(frozen=True)
class ProcessorSettings:
    """What the folder's image processor does to an image that our transform must do too."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class TransformersTower(nn.Module):
    """A transformers vision model as a vision tower (vision_towers.VisionTower): pixels [B, 3, S, S]
    normalised with the folder's mean / std -> [B, prefix + g*g, C], prefix tokens (CLS, registers) first
    unless `keep_prefix` is off."""

    def __init__(self, model: PreTrainedModel, family: Family, processor: ProcessorSettings, image_size: int,
                 keep_prefix: bool):
        super().__init__()
        self.model = model
        config = model.config
        self.image_size, self.mean, self.std = image_size, processor.mean, processor.std
        self.grid = image_size // config.patch_size
        own_prefix = int(family.class_token) + getattr(config, "num_register_tokens", 0)
        self.sequence_length = self.grid ** 2 + own_prefix
        self.prefix_tokens = own_prefix if keep_prefix else 0
        self.dropped_tokens = own_prefix - self.prefix_tokens
        self.num_features, self.depth = config.hidden_size, config.num_hidden_layers
        self.mlp_width = getattr(config, "intermediate_size", None) or int(config.hidden_size * config.mlp_ratio)
        resized = family.takes_interpolate_flag and image_size != config.image_size
        self.forward_options = {"interpolate_pos_encoding": True} if resized else {}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.model(pixel_values=pixels, **self.forward_options).last_hidden_state  # [B, own prefix + g*g, C]
        return tokens[:, self.dropped_tokens:]


def read_folder(folder: Path) -> tuple[Family, ProcessorSettings]:
    """The folder's model family (from config.json) and image processor settings; InputError names what is missing."""
    config_path = folder / "config.json"
    if not folder.exists():
        raise InputError(f"path '{folder}' does not exist (nor is it a preset (eva_clip_g) or timm:<name>)")
    if not config_path.is_file():
        raise InputError(f"'{folder}' is neither a preset (eva_clip_g), nor timm:<name>, nor a folder holding "
                         "config.json")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type in NOT_SUPPORTED:
        raise InputError(f"'{folder}': {NOT_SUPPORTED[model_type]}")
    if model_type not in FAMILIES:
        raise InputError(f"'{folder}': model_type '{model_type}' is not a vision tower built here "
                         f"(known: {', '.join(FAMILIES)})")
    return FAMILIES[model_type], processor_settings(folder)


def processor_settings(folder: Path) -> ProcessorSettings:
    """Image size and mean / std from preprocessor_config.json: the crop size where the processor crops
    (CLIP, DINOv2), else its resize size (SigLIP); sizes come as an int or as {height, width} or
    {shortest_edge}."""
    path = folder / PROCESSOR_FILE
    if not path.is_file():
        raise InputError(f"'{folder}' holds no {PROCESSOR_FILE}: the tower's image size and mean / std come from it")
    settings = json.loads(path.read_text())
    size = settings.get("crop_size") if settings.get("do_center_crop") else settings.get("size")
    side = size.get("height", size.get("shortest_edge")) if isinstance(size, dict) else size
    missing = [key for key, value in (("size", side), ("image_mean", settings.get("image_mean")),
                                      ("image_std", settings.get("image_std"))) if not value]
    if missing:
        raise InputError(f"{path}: no {', '.join(missing)}")
    return ProcessorSettings(int(side), tuple(settings["image_mean"]), tuple(settings["image_std"]))


def build_transformers_tower(folder: Path, image_size: int | None, layer: int | None, keep_prefix: bool,
                             with_weights: bool = True, grad_checkpointing: bool = False) -> TransformersTower:
    """The folder's vision tower, at `image_size` (None: its processor's), giving block `layer`'s raw output
    (negative, from the end; None: last_hidden_state). `with_weights=False`: random weights, read from no
    file but the two json files (plans build on the meta device)."""
    family, processor = read_folder(folder)
    config = family.model_class.config_class.from_pretrained(folder)
    if layer is not None:
        if not -config.num_hidden_layers <= layer <= -1:
            raise VitLayerError(f"{layer}: '{folder}' has {config.num_hidden_layers} blocks "
                             f"(-1 to -{config.num_hidden_layers})")
        config.num_hidden_layers += 1 + layer  # hidden_states[layer] is the output of this many blocks
    model = load_vision_folder(family.model_class, folder, config) if with_weights else family.model_class(config)
    owner = getattr(model, "vision_model", model)  # (older transformers nest the tower one level down)
    for name in (*family.unused, *([family.final_norm] if layer is not None and family.final_norm else [])):
        parent_name, _, leaf = name.rpartition(".")
        parent = owner.get_submodule(parent_name)
        setattr(parent, leaf, nn.Identity() if isinstance(getattr(parent, leaf), nn.Module) else None)
    if grad_checkpointing:  # (transformers >= 5.x names it activation checkpointing; older releases gradient)
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return TransformersTower(model, family, processor, image_size or processor.image_size, keep_prefix)


def load_vision_folder(model_class: type[PreTrainedModel], folder: Path, config) -> PreTrainedModel:
    """`from_pretrained`, made strict as the LLM's loading is (llm.load_llm_folder): a missing or wrongly
    shaped weight raises instead of being initialised at random. A whole CLIP or SigLIP folder's text
    weights, and those of blocks past `vit_layer`, are reported unused in one line."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # (its own report lists every unused text weight)
    try:
        model, info = model_class.from_pretrained(folder, config=config, output_loading_info=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
    report = LoadReport(str(folder), missing=sorted(info["missing_keys"]), unused=sorted(info["unexpected_keys"]))
    report.loaded = len(model.state_dict()) - len(report.missing)
    if info["mismatched_keys"] or report.missing:
        problem = (f"shapes differ from its config.json's: {summarize([key for key, *_ in info['mismatched_keys']])}"
                   if info["mismatched_keys"] else f"missing weights: {summarize(report.missing)}")
        raise InputError(f"model.vit_model: {folder}: {problem}")
    print(report, file=sys.stderr)
    return model
