"""OpenAI's presence and frequency penalties as a transformers logits processor.

For every token already generated, its logit is lowered by frequency_penalty x (times it appeared) plus
presence_penalty x (1 if it appeared at all), as OpenAI's API documents; negative values favour repeats.
With inputs_embeds, transformers hands the processor the generated tokens only, so the prompt is not
counted (as OpenAI counts the sampled text).
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor


class PresenceFrequencyPenalty(LogitsProcessor):
    def __init__(self, presence_penalty: float, frequency_penalty: float):
        self.presence_penalty, self.frequency_penalty = presence_penalty, frequency_penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, torch.ones_like(input_ids, dtype=scores.dtype))
        return scores - self.frequency_penalty * counts - self.presence_penalty * (counts > 0).to(scores.dtype)
