"""What both endpoints of the OpenAI-compatible server share: the served model with its batcher, the
error a refused request raises, and the check that a prompt leaves room for the answer asked for."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minigpt.conversation.collator import collator_for
from minigpt.serving.batching import Batcher

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's error code for a conversation too long


class RequestError(ValueError):
    """A request the server refuses: HTTP `status`, the request `param` at fault, and OpenAI's error `code`
    where a client acts on it (context_length_exceeded: a planner shortens its conversation)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


@dataclass
class ServedModel:
    """A loaded model and what answering needs: the batcher whose thread answers requests that arrive
    together in one generation batch (serving/batching.py), up to `max_batch` at a time."""

    name: str
    model: object
    image_processor: object
    image_root: Path
    max_image_bytes: int = 20 * 2**20
    max_batch: int = 8
    image_fetch_timeout_s: float = 10.0  # for an image named by an http(s) URL, in all
    max_images: int = 4  # per conversation, each with its own slots (as the original chat adds one per upload)

    def __post_init__(self):
        self.collator = collator_for(self.model)
        self.batcher = Batcher(self.model, self.collator, self.max_batch)


def check_room(prompt_tokens: int, max_new_tokens: int, limit: int, what: str = "conversation",
               param: str = "messages") -> None:
    """Refuse, as OpenAI does (400, code context_length_exceeded), a prompt (`what`, sent as `param`) that
    leaves the model's context no room for the answer asked for: the client shortens it or asks for less."""
    room = limit - prompt_tokens
    if room < 1:
        raise RequestError(f"the {what} takes {prompt_tokens} of the model's {limit} tokens (its maximum context "
                           f"length) and leaves no room for an answer; shorten the {param}", param,
                           code=CONTEXT_LENGTH_EXCEEDED)
    if max_new_tokens > room:
        raise RequestError(f"the {what} takes {prompt_tokens} of the model's {limit} tokens (its maximum context "
                           f"length); ask for at most {room} new tokens", "max_tokens", code=CONTEXT_LENGTH_EXCEEDED)
