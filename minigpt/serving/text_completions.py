"""OpenAI's `/v1/completions` for text-only prompts: the model continues each prompt as it is written
(BOS first where the tokenizer has one; no chat template, no image), for clients and harnesses that
score or continue raw text. Generation parameters are the chat endpoint's (request_params.py), with
OpenAI's default of 16 new tokens; `echo` puts the prompt before each answer; `suffix` is refused.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Iterator

from minigpt.conversation.collator import ConversationError
from minigpt.conversation.template import USER
from minigpt.serving.request_params import ParameterError, read_params
from minigpt.serving.served import RequestError, ServedModel, check_room

MAX_PROMPTS = 8
CHAT_ONLY = ("messages", "tools", "tool_choice", "parallel_tool_calls")


class TextCompletion:
    """One /v1/completions request, parsed and checked before the model is touched."""

    def __init__(self, body, served: ServedModel):
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        for name in CHAT_ONLY:
            if name in body:
                raise RequestError(f"'{name}' is for /v1/chat/completions", name)
        if body.get("suffix"):
            raise RequestError("'suffix' is not supported by this server", "suffix")
        prompt = body.get("prompt")
        self.prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(self.prompts, list) or not 0 < len(self.prompts) <= MAX_PROMPTS or \
                not all(isinstance(text, str) and text for text in self.prompts):
            raise RequestError(f"'prompt' is a non-empty string or a list of up to {MAX_PROMPTS} of them", "prompt")
        self.echo, self.stream = bool(body.get("echo", False)), bool(body.get("stream", False))
        if self.stream and len(self.prompts) > 1:
            raise RequestError("stream takes one prompt", "prompt")
        try:
            self.params = read_params({k: v for k, v in body.items() if k not in ("prompt", "echo", "suffix")},
                                      default_max_tokens=16)
        except ParameterError as error:
            raise RequestError(str(error), error.param) from None
        self.served = served
        self.samples = [{"id": f"prompt{index}", "turns": [(USER, text)], "completion_prompt": text, "image": None}
                        for index, text in enumerate(self.prompts)]
        try:
            batch = served.collator.generation_batch(self.samples)
        except ConversationError as error:
            raise RequestError(str(error), "prompt") from None
        self.prompt_tokens = [int(count) for count in batch["attention_mask"].sum(dim=1)]
        check_room(max(self.prompt_tokens), self.params.options.max_new_tokens, served.model.max_context_len,
                   "prompt", "prompt")
        self.id, self.created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def _choice(self, index: int, text: str, finish: str | None) -> dict:
        return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}

    def _usage(self, completion_tokens: int) -> dict:
        prompt_tokens = sum(self.prompt_tokens)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def _head(self) -> dict:
        warning = {"warning": "; ".join(self.params.warnings)} if self.params.warnings else {}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.served.name,
                **warning}

    def answer(self) -> dict:
        """n answers to each prompt, in prompt order (choice index = prompt index x n + answer index)."""
        choices, generated = [], 0
        for sample, prompt in zip(self.samples, self.prompts):
            for answer in self.served.batcher.answers(sample, self.params.options, self.params.seed, self.params.n):
                text = (prompt if self.echo else "") + answer.text
                choices.append(self._choice(len(choices), text, answer.finish_reason))
                generated += answer.token_count
        return {**self._head(), "choices": choices, "usage": self._usage(generated)}

    def chunks(self) -> Iterator[str]:
        """Server-sent events: (the prompt, with echo) each new piece of text, the finish reason, [DONE]."""
        def event(text: str, finish: str | None = None, usage: dict | None = None) -> str:
            chunk = {**self._head(), "choices": [self._choice(0, text, finish)]}
            if self.params.include_usage:
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk)}\n\n"

        if self.echo:
            yield event(self.prompts[0])
        stream = self.served.batcher.stream(self.samples[0], self.params.options, self.params.seed)
        for piece in stream:
            yield event(piece)
        yield event("", stream.answer.finish_reason, self._usage(stream.answer.token_count))
        yield "data: [DONE]\n\n"
