"""The vision encoder: a timm EVA ViT returning raw last-block tokens, followed by `ln_vision`.

EVA-CLIP ViT-g as BLIP-2 and MiniGPT-4 use it: patch 14, width 1408, 39 of its 40 blocks (BLIP-2 takes
the second-to-last layer), 16 heads, no final norm, CLS token kept. `vit_config` overrides any of these,
which is how tests build a tiny encoder of the same architecture. `EvaTower` is timm's Eva itself (not a
wrapper), so its weights keep the names released MiniGPT-4 checkpoints give them (`visual_encoder.*`).
"""
from __future__ import annotations

import contextlib

import torch
from timm.models.eva import Eva
from torch import nn

from minigpt.processors.image import CLIP_MEAN, CLIP_STD

EVA_CLIP_G = dict(patch_size=14, embed_dim=1408, depth=39, num_heads=16, mlp_ratio=4.3637, qkv_bias=True)
PRESETS = {"eva_clip_g": EVA_CLIP_G}


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so a half-precision encoder stays stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class EvaTower(Eva):
    """The EVA ViT as a vision tower (vision_towers.VisionTower): CLIP-normalised pixels [B, 3, S, S] ->
    [B, 1 + g*g, C] raw last-block tokens, CLS first; with `keep_prefix=False` the CLS token is left out."""

    def __init__(self, keep_prefix: bool = True, **eva_options):
        super().__init__(**eva_options)
        self.image_size, self.grid = self.patch_embed.img_size[0], self.patch_embed.grid_size[0]
        self.sequence_length = self.patch_embed.num_patches + self.num_prefix_tokens
        self.prefix_tokens = self.num_prefix_tokens if keep_prefix else 0
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        self.depth, self.mlp_width = len(self.blocks), self.blocks[0].mlp.fc1.out_features

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(pixels)  # [B, 1 + g*g, C]
        return tokens[:, self.num_prefix_tokens - self.prefix_tokens:]


def build_vision_encoder(vit_model: str, image_size: int, drop_path_rate: float = 0.0,
                         use_grad_checkpoint: bool = False, vit_config: dict | None = None,
                         keep_prefix: bool = True) -> tuple[EvaTower, FP32LayerNorm]:
    """-> (visual_encoder, ln_vision). The encoder maps [B, 3, S, S] to [B, 1 + (S/patch)^2, width]."""
    if vit_model not in PRESETS:
        raise ValueError(f"unknown vit_model '{vit_model}'; known: {', '.join(PRESETS)}")
    shape = {**PRESETS[vit_model], **(vit_config or {})}
    encoder = EvaTower(keep_prefix, img_size=image_size, num_classes=0, global_pool="", use_fc_norm=False,
                       use_post_transformer_norm=False, drop_path_rate=drop_path_rate, **shape)
    encoder.set_grad_checkpointing(use_grad_checkpoint)
    return encoder, FP32LayerNorm(encoder.num_features)


def in_own_precision(device_type: str, dtype: torch.dtype):
    """The context a frozen encoder whose weights are in `dtype` runs in: outside autocast when autocast is
    on with the other half precision (fp16 weights under bf16, as `vit_precision: fp16` with bf16 amp
    gives). Autocast would cast every weight again at every step, and it refuses to join the fp16 CLS token
    to the bf16 patches it makes (torch.cat: "Unexpected floating ScalarType")."""
    other_half = dtype != torch.float32 and torch.is_autocast_enabled(device_type) \
        and torch.get_autocast_dtype(device_type) != dtype
    return torch.autocast(device_type, enabled=False) if other_half else contextlib.nullcontext()
