"""Model architectures. Each registered arch is the one MiniGPT class with its own default configs."""
from minigpt.common.registry import register_model
from minigpt.models.minigpt import MiniGPT


@register_model("minigpt4", "mini_gpt4")
class MiniGPT4(MiniGPT):
    """MiniGPT-4: EVA ViT-g + frozen Q-Former + trained linear projector (or, for Llama-2, concat-4)."""

    default_model_type = "pretrain_vicuna0"
    default_configs = {
        "pretrain_vicuna0": "configs/models/minigpt4_vicuna0.yaml",
        "pretrain_llama2": "configs/models/minigpt4_llama2.yaml",
    }
