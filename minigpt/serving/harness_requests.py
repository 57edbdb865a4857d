"""What an evaluation harness asks of a model, whatever the harness: answers to questions about images, and
how likely the model finds a given answer (a multiple-choice option, one continuation at a time).

A harness writes its own prompt text ("<image>\\nWhat colour is it?\\nAnswer the question using a single word
or phrase."). Here that text becomes the user turn of a conversation in the model's own template, its
`<image>` tags removed (the template places the image slots), with MiniGPT-v2's task identifier ("[vqa]")
where the model's template writes one. Answers then go through the chat engine's batched generation, and
scores through the loss that `minigpt eval` ranks multiple-choice options by, so a question asked here and
the same question asked by `minigpt eval` get the same answer (tests/test_lmms_eval.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import groupby
from typing import Iterator

import torch
from PIL import Image

from minigpt.common.errors import InputError
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import USER
from minigpt.inference.chat import GenerationOptions, adapter_groups, generate_answers
from minigpt.processors.image import to_rgb

IMAGE_TAG = re.compile(r"<image>\s*", re.IGNORECASE)


@dataclass
class HarnessQuestion:
    """One question as a harness sends it: its prompt text, the images it shows, and its task identifier
    ("vqa", "refer", ... or None). `key` groups the requests that share a question (its choices)."""

    text: str
    images: list[Image.Image] = field(default_factory=list)
    task: str | None = None
    key: object = None


@dataclass
class ContinuationScore:
    """How unlikely the model finds a continuation as the answer: its tokens' summed and mean loss (the end
    marker included, as `minigpt eval` ranks choices), and whether greedy decoding would write it."""

    total_loss: float
    mean_loss: float
    greedy: bool


class HarnessModel:
    """A loaded model answering harness questions in batches of `batch_size`."""

    def __init__(self, model, image_processor, batch_size: int = 8):
        self.model, self.image_processor, self.batch_size = model, image_processor, batch_size
        self.collator = collator_for(model)

    def sample(self, question: HarnessQuestion, index: int) -> dict:
        """The question as the chat engine's sample: one image, or none (a text-only question)."""
        if len(question.images) > 1:
            raise InputError(f"question {index} shows {len(question.images)} images; this model takes one image "
                             "per question (ask it one image at a time, or merge them into one picture)")
        image = self.image_processor(to_rgb(question.images[0])) if question.images else None
        return {"id": str(index), "image": image, "task": question.task,
                "turns": [(USER, IMAGE_TAG.sub("", question.text).strip())]}

    def answer(self, questions: list[HarnessQuestion], options: GenerationOptions) -> list[str]:
        """Each question's generated answer, in order."""
        answers = []
        for start in range(0, len(questions), self.batch_size):
            chunk = questions[start:start + self.batch_size]
            samples = [self.sample(question, start + offset) for offset, question in enumerate(chunk)]
            with torch.no_grad():
                answers += generate_answers(self.model, self.collator, samples, options)
        return answers

    def score(self, questions: list[HarnessQuestion], continuations: list[str]) -> list[ContinuationScore]:
        """Each (question, continuation) pair's score, in order. Consecutive pairs with the same question key
        (a multiple-choice question's options) share one prompt and one encoding of its image. A continuation
        is an answer: the space a harness puts before it (lmms-eval's target delimiter) is not part of it."""
        scores: list[ContinuationScore | None] = [None] * len(questions)
        for rows in self._row_batches(questions):
            samples = [self.sample(questions[first], first) for first, _ in rows]
            candidates = [[continuations[i].strip() for i in indices] for _, indices in rows]
            for indices in adapter_groups(self.model, samples):
                batch = self.collator.scoring_batch([samples[i] for i in indices], [candidates[i] for i in indices])
                row = self.model.answer_scores(batch)
                flat = [index for i in indices for index in rows[i][1]]
                for position, index in enumerate(flat):
                    total, tokens = row.total[position].item(), row.tokens[position].item()
                    scores[index] = ContinuationScore(total, total / tokens, bool(row.greedy[position]))
        return scores

    def _row_batches(self, questions: list[HarnessQuestion]) -> Iterator[list[tuple[int, list[int]]]]:
        """Batches of (first index, indices) per question, each batch at most batch_size rows (a question's
        options are never split)."""
        batch, rows = [], 0
        for _, group in groupby(range(len(questions)), key=lambda i: (questions[i].key, questions[i].text)):
            indices = list(group)
            if batch and rows + len(indices) > self.batch_size:
                yield batch
                batch, rows = [], 0
            batch.append((indices[0], indices))
            rows += len(indices)
        if batch:
            yield batch
