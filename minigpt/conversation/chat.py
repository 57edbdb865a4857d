"""The chat engine behind demo.py: one image, a multi-turn history, generation with the model's template.

Prompts are built by the same collator that builds training batches, so chat sees exactly the
format the model was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from minigpt.conversation.template import ASSISTANT, USER


@dataclass
class GenerationOptions:
    max_new_tokens: int = 300
    num_beams: int = 1
    temperature: float = 1.0
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    do_sample: bool = False


def load_image(image: str | Path | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        return Image.open(image).convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read image {image}: {error}") from None


@dataclass
class Chat:
    model: torch.nn.Module
    image_processor: object
    options: GenerationOptions = field(default_factory=GenerationOptions)
    image: torch.Tensor | None = None
    raw_image: Image.Image | None = None  # the picture as loaded, for drawing answers' boxes on
    turns: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        self.collator = self.model.collator()

    def set_image(self, image: str | Path | Image.Image) -> None:
        """A new image starts a new conversation."""
        self.raw_image = load_image(image)
        self.image = self.image_processor(self.raw_image)
        self.turns = []

    def reset(self) -> None:
        self.turns = []

    def ask(self, question: str) -> str:
        sample = {"id": "chat", "image": self.image, "turns": self.turns + [(USER, question)]}
        answer = generate_answers(self.model, self.collator, [sample], self.options)[0]
        self.turns += [(USER, question), (ASSISTANT, answer)]
        return answer


def adapter_for(model, sample: dict) -> str | None:
    """The task adapter that answers a sample whose turns end with a user question (None: base model)."""
    return model.adapters.choose(sample.get("task"), sample["turns"][-1][1]) if model.adapters else None


def generate_answers(model, collator, samples: list[dict], options: GenerationOptions) -> list[str]:
    """Answers for samples whose turns end with a user question, generated as left-padded batches: one
    batch, or with task adapters one per adapter that the samples select (see models/adapters.py)."""
    groups: dict[str | None, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(adapter_for(model, sample), []).append(index)
    answers: list[str] = [""] * len(samples)
    for adapter, indices in groups.items():
        if model.adapters:
            model.adapters.use(adapter)
        batch = collator.generation_batch([samples[i] for i in indices])
        texts = model.generate(batch, max_new_tokens=options.max_new_tokens, num_beams=options.num_beams,
                               temperature=options.temperature, top_p=options.top_p,
                               repetition_penalty=options.repetition_penalty, do_sample=options.do_sample)
        for index, text in zip(indices, texts):
            answers[index] = text
    return answers
