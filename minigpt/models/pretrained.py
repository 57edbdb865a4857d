"""Released weights mapped onto our modules: the EVA-CLIP ViT-g file and the BLIP-2 Q-Former checkpoint
that MiniGPT-4 starts from (released MiniGPT checkpoints load through `model.ckpt`, see key_names.py).

Every loader returns a `LoadReport` (what loaded, what the file had that we do not use, what was
resampled) and raises, naming the file and the key, when a shape does not match or a weight the module
needs is missing: a silently partial load would train or answer with random weights.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minigpt.common import checkpoint  # module import: checkpoint.py imports models/ in turn
from minigpt.common.errors import CheckpointError
from minigpt.models.hf_blip2 import is_hf_folder, qformer_weights, vision_weights
from minigpt.models.key_names import qformer_key


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)     # the module's weights the file lacks
    unused: list[str] = field(default_factory=list)      # the file's weights this module has no place for
    resampled: list[str] = field(default_factory=list)   # weights reshaped to fit, with how
    dropped: list[str] = field(default_factory=list)     # the file's tensors the loader discards unasked

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.loaded} tensors loaded"]
        if self.resampled:
            lines.append("  resampled: " + "; ".join(self.resampled))
        if self.unused:
            lines.append(f"  unused ({len(self.unused)}): {summarize(self.unused)}")
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {summarize(self.missing)}")
        if self.dropped:
            lines.append(f"  dropped by transformers, which recomputes them ({len(self.dropped)}): "
                         f"{summarize(self.dropped)}")
        return "\n".join(lines)


def summarize(keys: list[str], limit: int = 6) -> str:
    """Collapse layer indices (`blocks.3.` -> `blocks.N.`) so a report of 40 blocks stays one line."""
    patterns = sorted({re.sub(r"\.\d+\.", ".N.", key) for key in keys})
    more = f", ... ({len(patterns) - limit} more)" if len(patterns) > limit else ""
    return ", ".join(patterns[:limit]) + more


def load_into(module: nn.Module, weights: dict[str, torch.Tensor], source: str, report: LoadReport) -> LoadReport:
    """Copy `weights` (already in the module's names) into `module`; a shape mismatch or a missing weight raises."""
    own = module.state_dict()
    for key, value in weights.items():
        if key not in own:
            report.unused.append(key)
        elif own[key].shape != value.shape:
            raise CheckpointError(f"{source}: {key}: shape {tuple(value.shape)} in the file, "
                             f"{tuple(own[key].shape)} in the model")
    usable = {key: value for key, value in weights.items() if key in own}
    module.load_state_dict(usable, strict=False)
    report.loaded += len(usable)
    report.missing += [key for key in own if key not in usable]
    if report.missing:
        raise CheckpointError(f"{source}: missing {len(report.missing)} weights the model needs: "
                         f"{summarize(report.missing)} (is this the right file?)")
    return report


# ---- EVA-CLIP ViT-g ---------------------------------------------------------------------------------
def resample_pos_embed(pos_embed: torch.Tensor, num_patches: int, num_prefix: int = 1) -> torch.Tensor:
    """[1, prefix + g*g, C] -> [1, prefix + n*n, C], bicubic over the patch grid (224 -> 448 pixels
    takes the 16x16 grid to 32x32); the CLS position is kept as it is."""
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    old, new = int(grid.shape[1] ** 0.5), int(num_patches ** 0.5)
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)  # [1, C, g, g]
    grid = F.interpolate(grid.float(), size=(new, new), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new * new, -1).to(pos_embed.dtype)  # [1, n*n, C]
    return torch.cat([prefix, grid], dim=1)


def load_eva_vit(encoder: nn.Module, path: str | Path) -> LoadReport:
    """The EVA ViT-g file MiniGPT-4 uses (`eva_vit_g.pth`: 40 blocks at 224 pixels, keys as timm's Eva)
    onto our encoder: blocks past its depth are left out (BLIP-2 takes the second-to-last layer), and
    the position embeddings are resampled to its image size. An EVA-CLIP file with `visual.` keys works too."""
    source = str(path)
    weights = vision_weights(path) if is_hf_folder(path) else checkpoint.read_weights(path)
    if any(key.startswith("visual.") for key in weights):
        weights = {key.removeprefix("visual."): value for key, value in weights.items() if key.startswith("visual.")}
    report = LoadReport(source)
    depth = len(encoder.blocks)
    kept = {}
    for key, value in weights.items():
        block = re.match(r"blocks\.(\d+)\.", key)
        if block and int(block.group(1)) >= depth:
            report.unused.append(key)
        else:
            kept[key] = value
    pos_embed = kept.get("pos_embed")
    if pos_embed is not None and pos_embed.shape != encoder.pos_embed.shape:
        kept["pos_embed"] = resample_pos_embed(pos_embed, encoder.patch_embed.num_patches)
        report.resampled.append(f"pos_embed {tuple(pos_embed.shape)} -> {tuple(kept['pos_embed'].shape)} (bicubic)")
    return load_into(encoder, kept, source, report)


# ---- BLIP-2 Q-Former ----------------------------------------------------------------------------
def load_blip2_qformer(model: nn.Module, path: str | Path) -> LoadReport:
    """The BLIP-2 checkpoint (`blip2_pretrained_flant5xxl.pth`) or a transformers BLIP-2 folder
    (hf_blip2.py): Q-Former, query tokens and `ln_vision`. Everything else in a .pth (its ViT copy,
    ITM/ITC heads, the text embeddings) is reported unused."""
    source = str(path)
    if model.Qformer is None:
        raise CheckpointError(f"model.q_former_model: {source}: this model has no Q-Former (model.has_qformer is false)")
    report = LoadReport(source)
    mapped = qformer_weights(path) if is_hf_folder(path) else {}  # a transformers folder: already our names
    for key, value in ({} if mapped else checkpoint.read_weights(path)).items():
        new_key = qformer_key(key) if key.startswith("Qformer.") else key
        if new_key and new_key.split(".")[0] in ("Qformer", "query_tokens", "ln_vision"):
            mapped[new_key] = value
        else:
            report.unused.append(key)
    query_tokens = mapped.pop("query_tokens", None)
    if query_tokens is None:
        raise CheckpointError(f"{source}: no query_tokens (is this a BLIP-2 checkpoint?)")
    if query_tokens.shape != model.query_tokens.shape:
        raise CheckpointError(f"{source}: query_tokens: shape {tuple(query_tokens.shape)} in the file, "
                         f"{tuple(model.query_tokens.shape)} in the model (see model.num_query_token)")
    with torch.no_grad():
        model.query_tokens.copy_(query_tokens)
    report.loaded += 1
    target = nn.ModuleDict({"Qformer": model.Qformer, "ln_vision": model.ln_vision})
    return load_into(target, mapped, source, report)
