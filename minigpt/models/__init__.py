"""Model architectures. Each registered arch is the one MiniGPT class with its own default configs."""
from minigpt.common.registry import register_model
from minigpt.models.minigpt import MiniGPT


@register_model("minigpt4", "mini_gpt4")
class MiniGPT4(MiniGPT):
    """MiniGPT-4: EVA ViT-g + frozen Q-Former + trained linear projector (or, for Llama-2, concat-4)."""

    default_model_type = "pretrain_vicuna0"
    default_configs = {
        "pretrain_vicuna0": "defaults/models/minigpt4_vicuna0.yaml",
        "pretrain_llama2": "defaults/models/minigpt4_llama2.yaml",
    }


@register_model("minigpt_v2")
class MiniGPTv2(MiniGPT):
    """MiniGPT-v2: EVA ViT-g at 448 px, 4 neighbouring tokens concatenated + linear, Llama-2 with LoRA,
    and task identifiers ([vqa], [refer], [grounding], ...) in its prompts."""

    default_model_type = "pretrain"
    default_configs = {"pretrain": "defaults/models/minigpt_v2.yaml"}
