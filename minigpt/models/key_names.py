"""Key names of released checkpoints in ours: LAVIS's BERT Q-Former -> transformers' Blip2QFormerModel,
and the unnamed peft 0.2.0 LoRA keys of MiniGPT-v2 -> peft's `default` adapter."""
from __future__ import annotations

import re

QFORMER_UNUSED = ("Qformer.cls.", "Qformer.bert.embeddings.word_embeddings", "Qformer.bert.embeddings.position_")
TEXT_FFN = re.compile(r"\.layer\.\d+\.(intermediate|output)\.")  # BERT's text feed-forward; queries use *_query


def qformer_key(key: str) -> str | None:
    """`Qformer.bert.encoder.layer.0.attention.self.query.weight` -> `Qformer.encoder.layer.0.attention.attention.query.weight`;
    None for the text-only parts that MiniGPT-4 drops (word embeddings, text FFN, LM head)."""
    if key.startswith(QFORMER_UNUSED) or TEXT_FFN.search(key):
        return None
    key = key.replace("Qformer.bert.embeddings.LayerNorm.", "Qformer.layernorm.")
    key = key.replace("Qformer.bert.", "Qformer.")
    return key.replace(".attention.self.", ".attention.attention.").replace(".crossattention.self.", ".crossattention.attention.")


def released_key(key: str) -> str | None:
    """Any key of a released MiniGPT-4 / MiniGPT-v2 checkpoint in our names (unchanged when already ours)."""
    if key.startswith("Qformer.bert."):
        return qformer_key(key)
    return re.sub(r"\.(lora_[AB])\.weight$", r".\1.default.weight", key)
