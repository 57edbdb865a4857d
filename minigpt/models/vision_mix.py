"""Mixed visual embeddings (SPHINX): further encoders beside the vision tower (timm models, or transformers
CLIP / SigLIP / DINOv2 folders), their tokens aligned to the tower's token grid and concatenated along
channels, so every projector sees one wider token sequence.

    view [B, 3, S, S], normalised for the main tower (EVA: CLIP's mean / std)
      main tower (+ ln_vision)                    -> [B, p + g*g, C]        g = S / patch, p prefix tokens
                                                                            (EVA: the CLS token, p = 1)
      each extra encoder k:
        re-normalise (its mean / std), resize to its input size, forward_features
          ViT-like -> [B, prefix + h*w, C_k]       its own prefix tokens (CLS, registers) dropped
          CNN-like -> [B, C_k, h, w]
        grid [B, C_k, h, w] -> resampled to g x g  -> [B, g*g, C_k]
        their mean in each of the p prefix slots, then a norm -> [B, p + g*g, C_k]
      concatenated along channels                 -> [B, p + g*g, C + sum_k C_k]
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minigpt.common import checkpoint  # module import: checkpoint.py imports models/ in turn
from minigpt.common.paths import resolve_path
from minigpt.models.hf_vision_tower import TransformersTower, build_transformers_tower
from minigpt.models.pretrained import LoadReport, load_into, resample_pos_embed
from minigpt.models.vision_encoder import FP32LayerNorm
from minigpt.processors.image import CLIP_MEAN, CLIP_STD


class ExtraEncoder(nn.Module):
    """A timm model whose tokens come out on the EVA ViT's grid, with their own norm (as `ln_vision`)."""

    def __init__(self, model: nn.Module, input_size: int, mean: tuple, std: tuple, *,
                 input_mean: tuple = CLIP_MEAN, input_std: tuple = CLIP_STD):
        """`mean`, `std`: the normalisation this encoder was trained with; `input_mean`, `input_std`: the one
        the views come with (the main tower's)."""
        super().__init__()
        self.model = model
        self.input_size = input_size
        self.num_features = model.num_features
        self.norm = FP32LayerNorm(self.num_features)
        mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        input_mean, input_std = torch.tensor(input_mean), torch.tensor(input_std)
        # pixels p as the views come -> (p * input_std + input_mean - mean) / std, as one multiply-add.
        self.register_buffer("pixel_scale", (input_std / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_shift", ((input_mean - mean) / std).view(1, 3, 1, 1), persistent=False)

    def forward(self, views: torch.Tensor, grid: int, prefix_tokens: int = 1) -> torch.Tensor:
        """[B, 3, S, S] -> [B, prefix_tokens + grid*grid, C_k], as the main tower's tokens lie."""
        pixels = views.float() * self.pixel_scale + self.pixel_shift
        if pixels.shape[-1] != self.input_size:
            pixels = F.interpolate(pixels, size=(self.input_size, self.input_size), mode="bicubic",
                                   align_corners=False, antialias=True)
        features = self.model.forward_features(pixels.to(next(self.model.parameters()).dtype))
        if features.ndim == 4:  # a CNN: [B, C_k, h, w], or channels last [B, h, w, C_k] (Swin)
            channels_last = features.shape[-1] == self.num_features and features.shape[1] != self.num_features
            feature_grid = features.permute(0, 3, 1, 2) if channels_last else features
        else:  # a ViT: [B, prefix + h*w, C_k]
            tokens = features[:, getattr(self.model, "num_prefix_tokens", 0):]
            side = math.isqrt(tokens.shape[1])
            if side * side != tokens.shape[1]:
                raise ValueError(f"{type(self.model).__name__}: {tokens.shape[1]} patch tokens do not form a square grid")
            feature_grid = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)  # [B, C_k, h, w]
        if feature_grid.shape[-2:] != (grid, grid):
            feature_grid = F.interpolate(feature_grid.float(), size=(grid, grid), mode="bilinear", align_corners=False,
                                         antialias=feature_grid.shape[-1] > grid).to(feature_grid.dtype)
        tokens = feature_grid.flatten(2).transpose(1, 2)  # [B, g*g, C_k]
        pooled = tokens.mean(dim=1, keepdim=True).expand(-1, prefix_tokens, -1)  # [B, p, C_k]
        tokens = torch.cat([pooled, tokens], dim=1)  # [B, p + g*g, C_k]
        return self.norm(tokens)


class TransformersFeatures(nn.Module):
    """A transformers vision tower seen as ExtraEncoder sees a timm ViT: forward_features gives its tokens,
    prefix (CLS, registers) first, and num_prefix_tokens says how many there are."""

    def __init__(self, tower: TransformersTower):
        super().__init__()
        self.tower = tower
        self.num_features, self.num_prefix_tokens = tower.num_features, tower.prefix_tokens

    def forward_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.tower(pixels)  # [B, prefix + h*w, C_k]


def create_timm_model(timm_model: str, options: dict, input_size: int | None = None) -> nn.Module:
    """A timm model with random weights and without its classifier, at `input_size` where it takes one
    (ViTs do; CNNs accept any size and refuse the argument)."""
    model = None
    if "img_size" not in options and input_size:
        try:
            model = timm.create_model(timm_model, pretrained=False, num_classes=0, img_size=input_size, **options)
        except TypeError:
            model = None
    if model is None:
        model = timm.create_model(timm_model, pretrained=False, num_classes=0, **options)
    # Only forward_features runs: pooling and head weights left in would get no gradient (DDP fails).
    for name in ("head", "fc_norm", "attn_pool"):
        if any(True for _ in (getattr(model, name, None) or nn.Identity()).parameters()):
            setattr(model, name, nn.Identity())
    return model


def build_extra_encoder(cfg, image_size: int, input_mean: tuple = CLIP_MEAN, input_std: tuple = CLIP_STD,
                        folder: Path | None = None, with_weights: bool = True) -> ExtraEncoder:
    """One `model.extra_encoders` entry -> ExtraEncoder; `image_size` (a timm encoder's default input size),
    `input_mean` and `input_std` are the main tower's. `folder`: where its `vision_model` is (a transformers
    tower, at its processor's size and mean / std unless the entry sets them; its folder's weights unless
    `with_weights` is off, as for a plan)."""
    if cfg.vision_model:
        tower = build_transformers_tower(folder, cfg.image_size, None, keep_prefix=True, with_weights=with_weights)
        return ExtraEncoder(TransformersFeatures(tower), tower.image_size, tuple(cfg.mean or tower.mean),
                            tuple(cfg.std or tower.std), input_mean=input_mean, input_std=input_std)
    input_size = cfg.image_size or image_size
    options = OmegaConf.to_container(cfg.timm_config) if isinstance(cfg.timm_config, DictConfig) else dict(cfg.timm_config)
    model = create_timm_model(cfg.timm_model, options, input_size)
    if cfg.weights:
        print(load_timm_weights(model, cfg.weights), file=sys.stderr)
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.mean or pretrained_cfg.get("mean", CLIP_MEAN))
    std = tuple(cfg.std or pretrained_cfg.get("std", CLIP_STD))
    return ExtraEncoder(model, input_size, mean, std, input_mean=input_mean, input_std=input_std)


def load_timm_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """A timm-layout state dict (.safetensors, or .pth loaded as weights only) onto `model`; position
    embeddings are resampled to its input size and a classifier head the model lacks is reported unused."""
    source = str(path)
    weights = checkpoint.read_weights(resolve_path(str(path)))
    report = LoadReport(source)
    own_pos = getattr(model, "pos_embed", None)
    pos_embed = weights.get("pos_embed")
    if pos_embed is not None and own_pos is not None and pos_embed.shape != own_pos.shape:
        prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        weights["pos_embed"] = resample_pos_embed(pos_embed, own_pos.shape[1] - prefix, prefix)
        report.resampled.append(f"pos_embed {tuple(pos_embed.shape)} -> {tuple(own_pos.shape)} (bicubic)")
    return load_into(model, weights, source, report)


def mixed_width(visual_encoder: nn.Module, extra_encoders: nn.ModuleList) -> int:
    """Channels per token once every encoder's tokens are concatenated."""
    return visual_encoder.num_features + sum(encoder.num_features for encoder in extra_encoders)
