"""Where each row of a generation batch ended, from the generation loop itself.

transformers' generate returns one row of ids per answer, and a row that finished before the others is
filled with padding. Padding (unk for Llama) is also an id a model can generate, so the ids alone do not
say how many were generated, nor whether a row stopped on its own or ran into max_new_tokens. RowEnds
wraps every stopping criterion of a generation and records the step at which each row first met one:
that step is the row's generated-id count, and a row that met none reached the limit.
"""
from __future__ import annotations

import torch
from transformers import StoppingCriteria
from transformers.generation.stopping_criteria import EosTokenCriteria, StopStringCriteria

from minigpt.conversation.generated import GeneratedAnswer
from minigpt.conversation.template import cut_at_markers


class RowEnds(StoppingCriteria):
    """The end-of-sequence id, the stop strings and the caller's criteria as one criterion, recording
    `ended_at` [rows]: how many ids each row had when it first stopped (0: it has not stopped).

    The prompt goes into generate as embeddings, so the ids it hands to criteria are the generated ones.
    """

    def __init__(self, tokenizer, stop_strings: list[str], criteria: list[StoppingCriteria] | None = None):
        self.criteria = [EosTokenCriteria(tokenizer.eos_token_id), *(criteria or [])]
        if stop_strings:
            self.criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
        self.ended_at: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self.criteria:
            done = done | criterion(input_ids, scores, **kwargs)
        if self.ended_at is None:
            self.ended_at = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        first_time = done & (self.ended_at == 0)  # a finished row is checked again on its padding: keep its end
        self.ended_at = torch.where(first_time, input_ids.shape[1], self.ended_at)
        return done


def counted_answers(output_ids: torch.Tensor, ends: RowEnds, tokenizer, markers: list[str],
                    num_beams: int = 1) -> list[GeneratedAnswer]:
    """Each row of generate's output [B, L] as a GeneratedAnswer: its text cut before the first marker
    (end marker or stop string), and its generated-id count and finish reason from `ends`.

    Beam search hands criteria its beams, not the returned rows: there a row's count is its ids up to its
    end-of-sequence id, or up to its trailing padding (see beam_row_count)."""
    texts = tokenizer.batch_decode(output_ids, skip_special_tokens=True)
    answers = []
    for row, text in enumerate(texts):
        if num_beams == 1:
            ended_at = int(ends.ended_at[row]) if ends.ended_at is not None else 0
            count, stopped = (ended_at, True) if ended_at else (output_ids.shape[1], False)
        else:
            count, stopped = beam_row_count(output_ids[row].tolist(), tokenizer)
            stopped = stopped or cut_at_markers(text, markers) != text or count < output_ids.shape[1]
        answers.append(GeneratedAnswer(cut_at_markers(text, markers).strip(), count, "stop" if stopped else "length"))
    return answers


def beam_row_count(ids: list[int], tokenizer) -> tuple[int, bool]:
    """(ids generated, whether the row ended with the end-of-sequence id) for a row of beam search's output."""
    if tokenizer.eos_token_id in ids:
        return ids.index(tokenizer.eos_token_id) + 1, True
    while ids and ids[-1] == tokenizer.pad_token_id:
        ids = ids[:-1]
    return len(ids), False
