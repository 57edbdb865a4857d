"""The chat engine behind demo.py, eval.py and serve.py: one image, a multi-turn history, generation
with the model's template, whole (batched) or streamed piece by piece.

Prompts are built by the same collator that builds training batches, so chat sees exactly the
format the model was trained on.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from minigpt.common.errors import InputError
from minigpt.common.schema import CHOICE_SCORINGS
from minigpt.conversation.collator import IGNORE_INDEX, collator_for
from minigpt.conversation.generated import GeneratedAnswer
from minigpt.conversation.template import ASSISTANT, USER, cut_at_markers
from minigpt.processors.image import to_rgb


@dataclass
class GenerationOptions:
    max_new_tokens: int = 300
    num_beams: int = 1
    temperature: float = 1.0
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    do_sample: bool = False
    presence_penalty: float = 0.0   # OpenAI's, on the logits (models/penalties.py)
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()      # the answer ends before the first of these
    top_k: int = 50                 # sampling: transformers' default, which the original demo sampled with; 0: off
    min_p: float = 0.0              # sampling: drop tokens under min_p x the likeliest one's probability; 0: off


def load_image(image: str | Path | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    try:
        return to_rgb(Image.open(image))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read image {image}: {error}") from None


@dataclass
class Chat:
    model: torch.nn.Module
    image_processor: object
    options: GenerationOptions = field(default_factory=GenerationOptions)
    image: torch.Tensor | None = None
    raw_image: Image.Image | None = None  # the picture as loaded, for drawing answers' boxes on
    turns: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        self.collator = collator_for(self.model)

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

    def ask_streaming(self, question: str) -> Iterator[str]:
        """ask(), yielding the answer's pieces as they are generated; the history gets the whole answer."""
        sample = {"id": "chat", "image": self.image, "turns": self.turns + [(USER, question)]}
        answer = ""
        for piece in stream_answer(self.model, self.collator, sample, self.options):
            answer += piece
            yield piece
        self.turns += [(USER, question), (ASSISTANT, answer)]


def adapter_for(model, sample: dict) -> str | None:
    """The task adapter that answers a sample whose turns end with a user question (None: base model)."""
    return model.adapters.choose(sample.get("task"), sample["turns"][-1][1]) if model.adapters else None


def adapter_groups(model, samples: list[dict]) -> Iterator[list[int]]:
    """Indices of the samples each task adapter answers, with that adapter switched on in turn (one
    group, the base model, when the model has no adapters; see models/adapters.py). Use each group
    before asking for the next: asking switches the adapter."""
    groups: dict[str | None, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(adapter_for(model, sample), []).append(index)
    for adapter, indices in groups.items():
        if model.adapters:
            model.adapters.use(adapter)
        yield indices


def generate_answers(model, collator, samples: list[dict], options: GenerationOptions, **generate_kwargs) -> list[str]:
    """Answers for samples whose turns end with a user question (see generate_counted_answers)."""
    return [answer.text for answer in generate_counted_answers(model, collator, samples, options, **generate_kwargs)]


def generate_counted_answers(model, collator, samples: list[dict], options: GenerationOptions,
                             **generate_kwargs) -> list[GeneratedAnswer]:
    """Answers for samples whose turns end with a user question, each with the number of ids generated for it
    and why it ended (what an API reports as usage), generated as left-padded batches, one per task adapter
    that the samples select. `generate_kwargs` (streamer, stopping_criteria) go to the model's generate."""
    answers: list[GeneratedAnswer | None] = [None] * len(samples)
    for indices in adapter_groups(model, samples):
        batch = collator.generation_batch([samples[i] for i in indices])
        generated = model.generate_counted(
            batch, max_new_tokens=options.max_new_tokens, num_beams=options.num_beams, temperature=options.temperature,
            top_p=options.top_p, repetition_penalty=options.repetition_penalty, do_sample=options.do_sample,
            stop=options.stop, presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty, top_k=options.top_k, min_p=options.min_p, **generate_kwargs)
        for index, answer in zip(indices, generated):
            answers[index] = answer
    return answers


def choose_answers(model, collator, samples: list[dict], scoring: str = "total") -> list[str]:
    """For samples that end with a question and carry "choices": the choice the model finds most likely
    as the answer (earlier answers of the conversation are not scored). Every (sample, choice) pair is
    one row of a batch; each image is encoded once. `scoring` ranks the choices by their answer tokens'
    (end marker included) loss:
      total     the sum: MiniGPT-v2's ranking (it favours short answers)
      mean      the mean per token
      original  MiniGPT-v2's number exactly: the sum divided by the length its padded batch had, which
                depends on the other samples of the batch (see original_lengths)
    """
    if scoring not in CHOICE_SCORINGS:
        raise ValueError(f"unknown choice scoring '{scoring}' (known: {', '.join(CHOICE_SCORINGS)})")
    for sample in samples:
        if not sample.get("choices"):
            raise ValueError(f"sample {sample['id']!r}: no 'choices' to choose the answer from")
    answers: list[str] = [""] * len(samples)
    for indices in adapter_groups(model, samples):
        group = [samples[index] for index in indices]
        batch = collator.scoring_batch(group, [s["choices"] for s in group])
        losses = model.answer_scores(batch).losses("mean" if scoring == "mean" else "sum")
        if scoring == "original":
            losses = losses / original_lengths(batch, group, len(collator.answer_tokens("none"))).to(losses.device)
        losses = losses.tolist()
        for index, sample in zip(indices, group):
            sample_losses, losses = losses[:len(sample["choices"])], losses[len(sample["choices"]):]
            answers[index] = sample["choices"][sample_losses.index(min(sample_losses))]
    return answers


def original_lengths(batch: dict, group: list[dict], filler_length: int) -> torch.Tensor:
    """[rows] the divisor of MiniGPT-v2's multiple-choice loss for each (sample, choice) row.

    It scores choice k of every sample in one forward pass (samples with fewer choices fill in "none")
    and averages each row's loss over all T - 1 positions of that padded batch, with T = 1 (its BOS) +
    the longest prompt + the longest k-th answer: so the divisor is shared by the batch and changes with k.
    """
    answer_lengths = (batch["labels"] != IGNORE_INDEX).sum(dim=1)  # [rows]
    prompt_lengths = batch["attention_mask"].sum(dim=1) - answer_lengths  # [rows], our BOS included
    counts = [len(sample["choices"]) for sample in group]
    starts = [sum(counts[:i]) for i in range(len(group))]
    longest_prompt = int(prompt_lengths.max())
    divisors = []
    for count in counts:
        for k in range(count):
            longest_answer = max(int(answer_lengths[start + k]) if k < n else filler_length
                                 for start, n in zip(starts, counts))
            divisors.append(longest_prompt - 1 + longest_answer)
    return torch.tensor(divisors, dtype=torch.float32)


def stream_answer(model, collator, sample: dict, options: GenerationOptions) -> Iterator[str]:
    """The answer to one sample, in pieces as they are generated; joined, they equal generate_answers'
    answer. Generation runs in a thread; closing the iterator early stops it."""
    from transformers import StoppingCriteria, TextIteratorStreamer

    class Stopped(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    stop = threading.Event()
    streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict = {}

    def run() -> None:
        try:
            result["answer"] = generate_answers(model, collator, [sample], options, streamer=streamer,
                                                stopping_criteria=[Stopped()])[0]
        except BaseException as error:  # handed to the reader below
            result["error"] = error
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    visible = VisibleAnswer([model.template.end_sym, *options.stop])
    try:
        for piece in streamer:
            shown = visible.add(piece)
            if shown:
                yield shown
    finally:
        stop.set()
        thread.join()
    if "error" in result:
        raise result["error"]
    rest = visible.finish(result.get("answer", visible.shown))
    if rest:
        yield rest


class VisibleAnswer:
    """The part of a growing answer that can be shown: nothing from its first end marker or stop string on,
    what may be the start of one held back, and no space at either end; the rest once it is whole."""

    def __init__(self, markers: list[str]):
        self.markers, self.text, self.shown = [m for m in markers if m], "", ""

    def add(self, piece: str) -> str:
        """Take the next raw piece; -> the newly visible text ("" while it is held back)."""
        self.text += piece
        visible = cut_at_markers(self.text, self.markers).lstrip()
        if visible == self.text.lstrip():  # hold back what may start a marker, and trailing space
            visible = visible[:len(visible) - max((_partial_suffix(visible, m) for m in self.markers), default=0)]
            visible = visible.rstrip()
        if not (visible.startswith(self.shown) and len(visible) > len(self.shown)):
            return ""
        new, self.shown = visible[len(self.shown):], visible
        return new

    def finish(self, answer: str) -> str:
        """The whole answer (as generate gave it) -> what of it was not shown yet."""
        return answer[len(self.shown):] if answer.startswith(self.shown) and len(answer) > len(self.shown) else ""


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    return next((n for n in range(min(len(marker) - 1, len(text)), 0, -1) if text.endswith(marker[:n])), 0)
