"""Writers: facts about an image -> one paragraph. A plain template writer that needs no LLM, our own
model, or any OpenAI-compatible endpoint. An LLM writer's answer is checked: an endpoint that is down or
an answer that is not prose raises WriterError, naming the writer and what came back.
"""
from __future__ import annotations

import re
from typing import Callable, Protocol

import numpy as np

from minigpt.paragraph.facts import Fact
from minigpt.agents.planners import EndpointPlanner, PlannerError

MAX_SENTENCES = 7
EMPTY_PARAGRAPH = "The image shows no distinct object."
INSTRUCTION = ("Write one paragraph of at most {n} sentences that describes the image from these facts. "
               "Name things by nouns, never by coordinates, and add nothing the facts do not say.\nFacts:\n{facts}")


class WriterError(RuntimeError):
    """A writer gave no paragraph: its endpoint could not be reached, or it answered something unusable."""


class Writer(Protocol):
    name: str

    def write(self, facts: list[Fact], caption: str | None, image: np.ndarray) -> str: ...


def place_phrase(position: str) -> str:
    special = {"left": "on the left", "right": "on the right", "center": "in the center"}
    return special.get(position, f"at the {position}")


def fact_sentence(fact: Fact) -> str:
    """"There is a large red circle at the top left." """
    where = f" {place_phrase(fact.position)}" if fact.position else ""
    article = "an" if fact.noun_phrase[0] in "aeiou" else "a"
    return f"There is {article} {fact.noun_phrase}{where}."


def fact_lines(facts: list[Fact], caption: str | None) -> str:
    """The facts as the LLM writers are given them: one line each, with its stages."""
    lines = [f"- overall: {caption} (caption)"] if caption else []
    lines += [f"- {fact.noun_phrase}" + (f", {place_phrase(fact.position)}" if fact.position else "")
              + f" ({', '.join(fact.sources)})" for fact in facts]
    return "\n".join(lines) or "- nothing was found"


class TemplateWriter:
    """The caption as the opening sentence, then one sentence per fact, at most MAX_SENTENCES in all."""

    name = "template"

    def write(self, facts: list[Fact], caption: str | None, image: np.ndarray | None = None) -> str:
        if not facts and not caption:
            return EMPTY_PARAGRAPH
        sentences = [f"The image shows {caption.rstrip('.')}."] if caption else []
        sentences += [fact_sentence(fact) for fact in facts if fact.sources != ["caption"]]  # the caption said those
        return " ".join(sentences[:MAX_SENTENCES])


def checked(answer: str, writer: str) -> str:
    """The answer as a paragraph, or WriterError when it is not one (empty, no words, a code block)."""
    text = (answer or "").strip()
    if len(re.findall(r"[A-Za-z]{2,}", text)) < 3 or text.startswith(("{", "[", "<", "```")):
        raise WriterError(f"the {writer} writer answered something that is not a paragraph: {text[:200]!r}")
    return text


class ModelWriter:
    """Our model writes the paragraph in plain chat, looking at the image and given the facts."""

    name = "model"

    def __init__(self, ask: Callable[[np.ndarray, str | None, str], str]):
        self.ask = ask  # ModelHandle.ask: (image, task, question) -> answer

    def write(self, facts: list[Fact], caption: str | None, image: np.ndarray) -> str:
        prompt = INSTRUCTION.format(n=MAX_SENTENCES, facts=fact_lines(facts, caption))
        try:
            answer = self.ask(image, None, prompt)
        except Exception as error:  # the model's failure is the writer's: named, and the fallback may stand in
            raise WriterError(f"the model writer failed: {type(error).__name__}: {error}") from error
        return checked(answer, self.name)


class EndpointWriter:
    """Any OpenAI-compatible /chat/completions endpoint, text only."""

    name = "endpoint"

    def __init__(self, url: str, model: str = "writer", timeout_s: float = 120.0):
        self.endpoint = EndpointPlanner(url, model, timeout_s=timeout_s)

    def write(self, facts: list[Fact], caption: str | None, image: np.ndarray | None = None) -> str:
        prompt = INSTRUCTION.format(n=MAX_SENTENCES, facts=fact_lines(facts, caption))
        try:
            reply = self.endpoint.next([{"role": "user", "content": prompt}], tools=[])
        except PlannerError as error:
            raise WriterError(f"the endpoint writer failed: {error}") from None
        return checked(reply.content, f"endpoint ({self.endpoint.url})")
