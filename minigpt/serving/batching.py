"""Batched serving: requests that arrive together are answered by one generation batch.

Requests wait in a queue; one worker thread owns the model. It takes the oldest request and every
queued one that can share its batch (the same generation options and the same task adapter), up to
`max_batch`, waiting `wait_s` for more to arrive, and answers them with one left-padded `generate`:
each row stops at its own end marker, and rows never attend to each other, so a greedy answer is the
one the request would get alone (tests/test_batched_serving.py). A streaming request gets its text as
the batch decodes: a streamer hands each step's tokens to their rows. A request with a seed, or for
several answers, runs alone, so that its seed repeats it exactly. Every answer comes back with the number
of ids generated for it and why it ended (conversation/generated.py), for the API's usage.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch
from transformers.generation.streamers import BaseStreamer

from minigpt.inference.chat import GenerationOptions, VisibleAnswer, adapter_for, generate_counted_answers
from minigpt.conversation.generated import GeneratedAnswer


@dataclass
class Job:
    """One request: what to answer, and a queue of ("piece", text) when streamed, then ("done", a list of
    GeneratedAnswer) or ("error", e)."""

    sample: dict
    options: GenerationOptions
    seed: int | None = None
    count: int = 1
    streamed: bool = False
    events: queue.Queue = field(default_factory=queue.Queue)

    def batch_key(self, model) -> tuple | None:
        """Jobs with equal keys share a batch; None: this one runs alone."""
        if self.seed is not None or self.count > 1:
            return None
        return dataclasses.astuple(self.options), adapter_for(model, self.sample)


class RowDecoder:
    """One row's tokens as text, decoded incrementally: each new token decodes a short window that starts
    a few tokens back (a word piece can change how its neighbour reads), so a step's cost does not grow
    with the answer."""

    def __init__(self, tokenizer):
        self.tokenizer, self.tokens, self.text = tokenizer, [], ""
        self.window_start = self.read_end = 0  # tokens[window_start:read_end] are already in self.text

    def add(self, token: int) -> str:
        """-> the whole text so far."""
        self.tokens.append(token)
        known = self._decode(self.tokens[self.window_start:self.read_end])
        extended = self._decode(self.tokens[self.window_start:])
        if len(extended) > len(known) and not extended.endswith("\ufffd"):  # not in the middle of a character
            self.text += extended[len(known):]
            self.window_start, self.read_end = self.read_end, len(self.tokens)
        return self.text

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


class RowStreamer(BaseStreamer):
    """transformers' streamer for a batch: each decoding step's tokens [B] go to the streamed rows' jobs as
    text, a word at a time (a token may still change how the word before it decodes)."""

    def __init__(self, tokenizer, jobs: list[Job]):
        self.jobs = jobs
        self.rows = {row: RowDecoder(tokenizer) for row, job in enumerate(jobs) if job.streamed}
        self.sent = dict.fromkeys(self.rows, "")
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        step_tokens = value.reshape(len(self.jobs), -1)[:, -1].tolist()  # [B]
        for row, decoder in self.rows.items():
            text = decoder.add(step_tokens[row])
            ready = text if text.endswith("\n") else text[:text.rfind(" ") + 1]
            if "\ufffd" not in ready and len(ready) > len(self.sent[row]):
                self.jobs[row].events.put(("piece", ready[len(self.sent[row]):]))
                self.sent[row] = ready

    def end(self) -> None:
        pass


class AnswerStream:
    """One streamed answer: iterating gives its text in pieces as its batch decodes, what can be shown of it
    (chat.VisibleAnswer); once that ends, `answer` is the whole GeneratedAnswer. The usage of a streamed
    reply is known only then: it counts the ids generated, which the pieces do not show."""

    def __init__(self, job: Job, markers: list[str]):
        self.job, self.visible = job, VisibleAnswer(markers)
        self.answer: GeneratedAnswer | None = None

    def __iter__(self) -> Iterator[str]:
        while True:
            kind, value = self.job.events.get()
            if kind == "error":
                raise value
            if kind == "done":
                self.answer = value[0]
            shown = self.visible.add(value) if kind == "piece" else self.visible.finish(self.answer.text)
            if shown:
                yield shown
            if kind == "done":
                return


class Batcher:
    """The worker thread that owns the model and answers queued requests in batches."""

    def __init__(self, model, collator, max_batch: int = 8, wait_s: float = 0.01):
        self.model, self.collator, self.max_batch, self.wait_s = model, collator, max_batch, wait_s
        self.queue: queue.Queue[Job] = queue.Queue()
        self.waiting: list[Job] = []  # taken from the queue, but for a later batch
        threading.Thread(target=self._serve, daemon=True, name="batcher").start()

    def answers(self, sample: dict, options: GenerationOptions, seed: int | None = None,
                count: int = 1) -> list[GeneratedAnswer]:
        job = Job(sample, options, seed, count)
        self.queue.put(job)
        while True:
            kind, value = job.events.get()
            if kind == "done":
                return value
            if kind == "error":
                raise value

    def stream(self, sample: dict, options: GenerationOptions, seed: int | None = None) -> AnswerStream:
        """The answer in pieces as its batch decodes (joined, they are `answers(...)[0].text`), then the whole
        answer with its token count."""
        job = Job(sample, options, seed, streamed=True)
        self.queue.put(job)
        return AnswerStream(job, [self.model.template.end_sym, *options.stop])

    def _next_batch(self) -> list[Job]:
        """The oldest job and, if it can share, the queued jobs with its key (waiting `wait_s` for more)."""
        first = self.waiting.pop(0) if self.waiting else self.queue.get()
        key = first.batch_key(self.model)
        if key is None:
            return [first]
        batch, later = [first], []
        for job in self.waiting:
            (batch if job.batch_key(self.model) == key and len(batch) < self.max_batch else later).append(job)
        while len(batch) < self.max_batch:
            try:
                job = self.queue.get(timeout=self.wait_s)
            except queue.Empty:
                break
            (batch if job.batch_key(self.model) == key else later).append(job)
        self.waiting = later
        return batch

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                if batch[0].seed is not None:
                    torch.manual_seed(batch[0].seed)
                if len(batch) == 1 and batch[0].count > 1:
                    job = batch[0]
                    results = [[generate_counted_answers(self.model, self.collator, [job.sample], job.options)[0]
                                for _ in range(job.count)]]
                else:
                    streamer = RowStreamer(self.model.tokenizer, batch) if any(j.streamed for j in batch) else None
                    answers = generate_counted_answers(self.model, self.collator, [job.sample for job in batch],
                                                       batch[0].options, streamer=streamer)
                    results = [[answer] for answer in answers]
                for job, result in zip(batch, results):
                    job.events.put(("done", result))
            except Exception as error:  # each waiting request reports it
                for job in batch:
                    job.events.put(("error", error))
