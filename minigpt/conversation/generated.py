"""What one generated answer cost, as the generation loop saw it.

An API reports token usage and why an answer ended. Both must come from the ids the model generated:
re-tokenizing the decoded text gives another count (byte and word pieces merge, an end marker or stop
string is cut from the text, the end-of-sequence id decodes to nothing), and the text cannot tell an
answer that hit the token limit from one that ended on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GeneratedAnswer:
    """One answer: its text (end markers and stop strings cut off), the number of ids generated for it
    (its end-of-sequence id or stop string included, the padding of a finished batch row not), and why
    generation ended: "length" when it reached max_new_tokens, "stop" when it ended by the
    end-of-sequence id, an end marker or a stop string."""

    text: str
    token_count: int
    finish_reason: FinishReason
