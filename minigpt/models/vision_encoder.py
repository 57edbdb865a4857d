"""The vision encoder: a timm EVA ViT returning raw last-block tokens, followed by `ln_vision`.

EVA-CLIP ViT-g as BLIP-2 and MiniGPT-4 use it: patch 14, width 1408, 39 of its 40 blocks (BLIP-2 takes
the second-to-last layer), 16 heads, no final norm, CLS token kept. `vit_config` overrides any of these,
which is how tests build a tiny encoder of the same architecture.
"""
from __future__ import annotations

import contextlib

import torch
from timm.models.eva import Eva
from torch import nn

EVA_CLIP_G = dict(patch_size=14, embed_dim=1408, depth=39, num_heads=16, mlp_ratio=4.3637, qkv_bias=True)
PRESETS = {"eva_clip_g": EVA_CLIP_G}


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so a half-precision encoder stays stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def build_vision_encoder(vit_model: str, image_size: int, drop_path_rate: float = 0.0,
                         use_grad_checkpoint: bool = False, vit_config: dict | None = None) -> tuple[Eva, FP32LayerNorm]:
    """-> (visual_encoder, ln_vision). The encoder maps [B, 3, S, S] to [B, 1 + (S/patch)^2, width]."""
    if vit_model not in PRESETS:
        raise ValueError(f"unknown vit_model '{vit_model}'; known: {', '.join(PRESETS)}")
    shape = {**PRESETS[vit_model], **(vit_config or {})}
    encoder = Eva(img_size=image_size, num_classes=0, global_pool="", use_fc_norm=False,
                  use_post_transformer_norm=False, drop_path_rate=drop_path_rate, **shape)
    encoder.set_grad_checkpointing(use_grad_checkpoint)
    return encoder, FP32LayerNorm(encoder.num_features)


def num_patches(encoder: Eva) -> int:
    return encoder.patch_embed.num_patches


def in_own_precision(device_type: str, dtype: torch.dtype):
    """The context a frozen encoder whose weights are in `dtype` runs in: outside autocast when autocast is
    on with the other half precision (fp16 weights under bf16, as `vit_precision: fp16` with bf16 amp
    gives). Autocast would cast every weight again at every step, and it refuses to join the fp16 CLS token
    to the bf16 patches it makes (torch.cat: "Unexpected floating ScalarType")."""
    other_half = dtype != torch.float32 and torch.is_autocast_enabled(device_type) \
        and torch.get_autocast_dtype(device_type) != dtype
    return torch.autocast(device_type, enabled=False) if other_half else contextlib.nullcontext()
