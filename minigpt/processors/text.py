"""Caption cleaning as BLIP did it: lower case, punctuation to spaces, at most `max_words` words."""
from __future__ import annotations

import re

from minigpt.common.registry import register_processor

_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")
_SPACES = re.compile(r"\s{2,}")


@register_processor("blip_caption")
class BlipCaptionProcessor:
    def __init__(self, prompt: str = "", max_words: int = 50):
        self.prompt = prompt
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        caption = _PUNCTUATION.sub(" ", caption.lower())
        caption = _SPACES.sub(" ", caption).rstrip("\n").strip(" ")
        words = caption.split(" ")
        return self.prompt + " ".join(words[: self.max_words])
