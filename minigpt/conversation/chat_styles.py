"""How the original MiniGPT-4 demos and eval scripts wrote a conversation for generation.

A released checkpoint was trained with the training template (conversation/template.py) but chatted
with and benchmarked through the original's `Conversation` templates, which differ from training: a
system text first, no space before "###Assistant:" for Vicuna v0, and a literal "<s>" before every
"[INST]" for Llama-2 and MiniGPT-v2 (so the prompt starts with two BOS tokens, the tokenizer's and
the literal one). `model.chat_prompt` picks the style of generation and scoring prompts:

  training   the training template, one BOS per user turn (models trained here)
  vicuna_v0  Give the following image: ... questions.###Human: <Img><ImageHere></Img> Q###Assistant:
  llama2     Give the following image: ... questions.<s>[INST] <Img><ImageHere></Img> Q [/INST]
  minigptv2  <s>[INST] <Img><ImageHere></Img> [vqa] Q [/INST]
  auto       the original's style (by arch and model_type) for a released .pth checkpoint, else training
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MINIGPT4_SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once "
                   "I provide it to you. Please answer my questions.")
RELEASED_SUFFIXES = (".pth", ".pt", ".bin")  # the original's checkpoint files; ours are folders or .safetensors


@dataclass(frozen=True)
class ChatStyle:
    """The original `Conversation` (its SINGLE separator style): system, two role prefixes, one separator."""

    system: str
    user_role: str
    assistant_role: str
    sep: str

    def render(self, pairs: list[tuple[str, str | None]]) -> str:
        """`Conversation.get_prompt` for (user text, answer) pairs whose last answer is None: a message
        is written as role + text + sep, an empty one as its role alone."""
        text = self.system + self.sep
        for user_text, answer in pairs:
            for role, message in ((self.user_role, user_text), (self.assistant_role, answer)):
                text += role + message + self.sep if message else role
        return text


CHAT_STYLES = {
    "vicuna_v0": ChatStyle(MINIGPT4_SYSTEM, "Human: ", "Assistant: ", "###"),
    "llama2": ChatStyle(MINIGPT4_SYSTEM, "<s>[INST] ", " [/INST] ", ""),
    "minigptv2": ChatStyle("", "<s>[INST] ", " [/INST]", ""),
}
CHAT_PROMPTS = ("auto", "training", *CHAT_STYLES)


def original_style_name(arch: str, model_type: str | None) -> str:
    """The style the original demo of this architecture used (demo.py picks it by model_type)."""
    if arch == "minigpt_v2":
        return "minigptv2"
    return "llama2" if model_type == "pretrain_llama2" else "vicuna_v0"


def chat_style_for(model_config) -> ChatStyle | None:
    """The model config's generation style; None means the training template."""
    name = model_config.get("chat_prompt", "auto")
    if name == "auto":
        released = model_config.get("ckpt") and Path(str(model_config.ckpt)).suffix in RELEASED_SUFFIXES
        name = original_style_name(model_config.arch, model_config.get("model_type")) if released else "training"
    if name == "training":
        return None
    if name not in CHAT_STYLES:
        raise ValueError(f"model.chat_prompt: unknown '{name}' (known: {', '.join(CHAT_PROMPTS)})")
    return CHAT_STYLES[name]
