"""The projector `llama_proj`, from the vision side's width to the LLM's."""
from __future__ import annotations

from torch import nn


def build_projector(in_width: int, llm_width: int, proj_type: str = "linear") -> nn.Module:
    """Linear (MiniGPT-4 / v2), or mlp: linear, GELU, linear (LLaVA-1.5, SPHINX)."""
    if proj_type == "linear":
        return nn.Linear(in_width, llm_width)
    if proj_type == "mlp":
        return nn.Sequential(nn.Linear(in_width, llm_width), nn.GELU(), nn.Linear(llm_width, llm_width))
    raise ValueError(f"model.proj_type: '{proj_type}' is not linear or mlp")
