"""Instruction phrasings per task.

Datasets whose annotations hold no question (captions, referring expressions) draw one phrasing per
sample from these pools, so the model does not learn a single fixed wording. `{}` is filled with the
question, expression or box. The task identifier (`[vqa]`, `[refer]`, ...) is not written here: the
sample carries its task, and the prompt template adds the identifier when the model uses them.
"""
from __future__ import annotations

import random

SHORT_CAPTION = (
    "Briefly describe this image.",
    "Give a short caption for this image.",
    "Describe the image in one sentence.",
    "Write a concise description of the picture.",
    "What does this image show? Answer in a few words.",
    "Summarise the content of the image briefly.",
)
DETAILED_CAPTION = (
    "Describe this image in detail.",
    "Give a detailed description of the picture.",
    "What do you see in this image? Describe it thoroughly.",
    "Explain what is happening in this image, with details.",
)
VQA = (
    "{}",
    "Based on the image, answer this question with a short answer: {}",
    "Look at the image and answer briefly: {}",
)
REFER = (
    "{}",
    "Where is {}?",
    "Give me the location of {}.",
    "Find {} in the image.",
    "Locate {}.",
    "Which region does this phrase describe: {}",
)
IDENTIFY = (
    "{}",
    "What object is in this location {}?",
    "Identify the object at {}.",
    "What is in the region {}?",
)


def phrase(pool: tuple[str, ...], rng: random.Random, value: str = "") -> str:
    return rng.choice(pool).format(value)
