"""The vision tower `model.vit_model` names, of three kinds behind one interface (VisionTower):

    eva_clip_g                 the EVA ViT-g of MiniGPT-4 and BLIP-2 (vision_encoder.py), `vit_weights` its file
    timm:<name>                any timm ViT by name (timm:vit_large_patch14_dinov2, ...), random weights unless
                               `vit_weights` names a file in timm's layout; `vit_config` are create_model arguments
    <folder or hub id>         a transformers CLIP, SigLIP or DINOv2 folder, weights and all (hf_vision_tower.py)

Each comes at its own resolution and normalisation (`model.image_size` unset: EVA 224, a folder its
preprocessor_config.json's, timm its pretrained config's), which the image processors then use. `vit_layer`
(-1, -2, ...) takes a block's raw output instead of the tower's own, and `vit_cls: drop` leaves out the
tokens before the patches (CLS, registers). Only the EVA ViT has an `ln_vision` (a LayerNorm the released
checkpoints trained); the other towers' tokens reach the projector as the tower gives them, as in LLaVA.
"""
from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common.errors import InputError
from minigpt.common.fetch import hub_file, parse_source
from minigpt.common.paths import resolve_model_folder, resolve_path
from minigpt.models.hf_vision_tower import PROCESSOR_FILE, TransformersTower, VitLayerError, build_transformers_tower
from minigpt.models.pretrained import load_eva_vit
from minigpt.models.vision_encoder import PRESETS, build_vision_encoder
from minigpt.models.vision_mix import ExtraEncoder, build_extra_encoder, create_timm_model, load_timm_weights
from minigpt.processors.image import CLIP_MEAN, CLIP_STD

TIMM_PREFIX = "timm:"
EVA_IMAGE_SIZE = 224  # the EVA ViT's input side when model.image_size is unset


class VisionTower(Protocol):
    """What the model asks of a vision encoder, whichever library built it."""

    image_size: int  # pixels per side of the images it takes
    grid: int  # patches per side: its output holds grid * grid patch tokens, row by row
    prefix_tokens: int  # tokens before the patches in its output (CLS, registers); 0 when left out
    num_features: int  # channels per token
    mean: tuple[float, float, float]  # the normalisation its pixels come with
    std: tuple[float, float, float]
    sequence_length: int  # tokens its blocks run over (every prefix token, kept or not, and the patches)
    depth: int  # blocks it runs
    mlp_width: int  # their MLPs' inner width

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, image_size, image_size] -> [B, prefix_tokens + grid * grid, num_features]."""


class TimmTower(nn.Module):
    """A timm ViT as a vision tower: forward_features, its own prefix tokens kept or left out."""

    def __init__(self, model: nn.Module, keep_prefix: bool):
        super().__init__()
        self.model = model
        self.image_size, self.grid = model.patch_embed.img_size[0], model.patch_embed.grid_size[0]
        self.sequence_length = self.grid ** 2 + model.num_prefix_tokens
        self.prefix_tokens = model.num_prefix_tokens if keep_prefix else 0
        self.num_features, self.depth = model.num_features, len(model.blocks)
        fc1 = getattr(model.blocks[0].mlp, "fc1", None)
        self.mlp_width = fc1.out_features if fc1 is not None else 4 * self.num_features  # (SwiGLU: about that)
        pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
        self.mean = tuple(pretrained_cfg.get("mean", CLIP_MEAN))
        self.std = tuple(pretrained_cfg.get("std", CLIP_STD))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(pixels)  # [B, own prefix + g*g, C]
        return tokens[:, self.model.num_prefix_tokens - self.prefix_tokens:]


def build_timm_tower(name: str, options: dict, image_size: int | None, layer: int | None, keep_prefix: bool,
                     drop_path_rate: float = 0.0, grad_checkpointing: bool = False) -> TimmTower:
    """timm model `name` with random weights, at `image_size` (None: its own), up to block `layer`."""
    if drop_path_rate:
        options = {**options, "drop_path_rate": drop_path_rate}
    model = create_timm_model(name, options, image_size)
    if not hasattr(model, "patch_embed") or not hasattr(model, "blocks"):
        raise InputError(f"timm '{name}' is no ViT (no patch_embed and blocks); a CNN can join as an extra encoder")
    if layer is not None:
        if not -len(model.blocks) <= layer <= -1 or not hasattr(model, "prune_intermediate_layers"):
            raise VitLayerError(f"{layer}: timm '{name}' has {len(model.blocks)} blocks that can be cut "
                             f"(-1 to -{len(model.blocks)})")
        # the blocks after `layer` dropped, and the final norm: the block's raw output, as vit_layer means it
        model.prune_intermediate_layers(indices=[len(model.blocks) + layer], prune_norm=True, prune_head=True)
    model.set_grad_checkpointing(grad_checkpointing)
    return TimmTower(model, keep_prefix)


def tower_kind(vit_model: str) -> str:
    """eva, timm or transformers: which kind of tower `model.vit_model` names."""
    if vit_model in PRESETS:
        return "eva"
    return "timm" if str(vit_model).startswith(TIMM_PREFIX) else "transformers"


def tower_folder(vit_model: str) -> Path:
    """A transformers tower's local folder. The config loader has fetched a hub id already, but for a plan,
    which fetches only the two json files the shape needs (from the cache when it holds them)."""
    source = parse_source(str(vit_model), want="folder")
    if source.kind != "hub":
        return resolve_model_folder(vit_model)
    hub_file(source.repo_id, PROCESSOR_FILE, source.revision)
    return hub_file(source.repo_id, "config.json", source.revision).parent


def _plain(options) -> dict:
    return OmegaConf.to_container(options) if isinstance(options, DictConfig) else dict(options or {})


def _build(vit_model: str, vit_config: dict, image_size: int | None, layer: int | None, keep_prefix: bool,
           with_weights: bool, drop_path_rate: float = 0.0, grad_checkpointing: bool = False):
    """-> (tower, ln_vision): an EVA tower's own LayerNorm, nn.Identity for the others."""
    kind = tower_kind(vit_model)
    if kind == "eva":
        return build_vision_encoder(vit_model, image_size or EVA_IMAGE_SIZE, drop_path_rate, grad_checkpointing,
                                    vit_config, keep_prefix)
    if kind == "timm":
        tower = build_timm_tower(vit_model.removeprefix(TIMM_PREFIX), vit_config, image_size, layer, keep_prefix,
                                 drop_path_rate, grad_checkpointing)
    else:
        tower = build_transformers_tower(tower_folder(vit_model), image_size, layer, keep_prefix, with_weights,
                                         grad_checkpointing)
    return tower, nn.Identity()


def build_vision_tower(cfg, with_weights: bool = True) -> tuple[VisionTower, nn.Module]:
    """The `model:` config's tower and its ln_vision. `with_weights=False`: a transformers tower's weights
    are not read (a plan builds on the meta device); EVA and timm towers load theirs later (load_tower_weights)."""
    return _build(cfg.vit_model, _plain(cfg.vit_config), cfg.image_size, cfg.vit_layer, cfg.vit_cls == "keep",
                  with_weights, cfg.drop_path_rate, cfg.use_grad_checkpoint)


def build_vision_side(cfg, with_weights: bool = True) -> tuple[VisionTower, nn.Module, list[ExtraEncoder]]:
    """The tower, its ln_vision and the extra encoders (vision_mix.py), which see the tower's images."""
    tower, ln_vision = build_vision_tower(cfg, with_weights)
    extras = []
    for extra in cfg.extra_encoders:
        if not with_weights:
            extra = extra.copy()
            extra.weights = None
        folder = tower_folder(extra.vision_model) if extra.vision_model else None
        extras.append(build_extra_encoder(extra, tower.image_size, tower.mean, tower.std, folder, with_weights))
    return tower, ln_vision, extras


def load_tower_weights(tower: VisionTower, cfg) -> bool:
    """`vit_weights` onto an EVA or timm tower (a transformers tower has its folder's already). -> whether the
    tower's weights come from files outside our checkpoints."""
    if isinstance(tower, TransformersTower):
        return True
    if not cfg.vit_weights:
        return False
    path = resolve_path(cfg.vit_weights)
    print(load_timm_weights(tower.model, path) if isinstance(tower, TimmTower) else load_eva_vit(tower, path),
          file=sys.stderr)
    return True


@dataclass(frozen=True)
class TowerShape:
    """What the data and the prompt need to know of a tower, without its weights."""

    image_size: int
    grid: int
    prefix_tokens: int
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def tower_shape(cfg) -> TowerShape:
    """The `model:` config's tower's shape and normalisation; each distinct setting is built once, on the
    meta device (no memory, no weights). Raises InputError for a tower that cannot be built."""
    return _shape_of(str(cfg.vit_model), json.dumps(_plain(cfg.vit_config), sort_keys=True), cfg.image_size,
                     cfg.vit_layer, cfg.vit_cls == "keep")


@functools.lru_cache(maxsize=32)
def _shape_of(vit_model: str, vit_config: str, image_size: int | None, layer: int | None,
              keep_prefix: bool) -> TowerShape:
    with torch.device("meta"):
        tower, _ = _build(vit_model, json.loads(vit_config), image_size, layer, keep_prefix, with_weights=False)
    return TowerShape(tower.image_size, tower.grid, tower.prefix_tokens, tower.num_features, tuple(tower.mean),
                      tuple(tower.std))
