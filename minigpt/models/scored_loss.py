"""The LM head and the cross-entropy only at the positions a label scores.

A causal LM's head maps every position to vocabulary logits, [B, T, V]; at a 32k vocabulary those are
larger than the model's activations, yet only the answer tokens (about one position in eight in a
MiniGPT-4 stage-2 batch) carry a label. Here the decoder runs as usual, the hidden states of the labelled
positions are gathered ([N, D]), and the head and the loss run on them `chunk_size` rows at a time (by
default as many as make about 32 MiB of float32 logits: 262 rows at a 32k vocabulary), so memory holds
one chunk's logits at most. For the training loss the gradients are computed in the same pass
(HeadLossWithGradients): the mean loss is the graph's last step, so its gradient with respect to each
chunk's logits, (softmax - one-hot) / N, is known as soon as the logits are, and the backward pass only
scales what was kept ([N, D] and the head's [V, D]). Elsewhere (per-token losses, a head that is not a
plain linear layer) each chunk's logits are recomputed in the backward pass. The loss and every gradient
are the full computation's (tests/test_scored_loss.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from minigpt.conversation.collator import IGNORE_INDEX


def decoder_and_head(llm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The causal LM's decoder (embeddings to last hidden states) and its LM head; under LoRA the LLM is
    peft's wrapper, whose base model holds both, with the LoRA layers inside."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return base.get_decoder(), base.get_output_embeddings()


LOGITS_PER_CHUNK = 2**23  # 32 MiB in float32


def rows_per_chunk(vocab_size: int, chunk_size: int | None = None) -> int:
    """`chunk_size`, or the rows whose logits make about LOGITS_PER_CHUNK values, from 64 (the head's
    matrix product stays efficient) to 1024 (beyond that a chunk saves no time)."""
    return chunk_size or min(1024, max(64, LOGITS_PER_CHUNK // vocab_size))


def _chunk_losses(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[n, D] hidden states, [n] targets -> [n] losses, computed in float32 as transformers does."""
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def chunk_logits(hidden: torch.Tensor, head_weight: torch.Tensor) -> torch.Tensor:
    """[n, D] -> [n, V] in float32, as transformers computes the loss."""
    return F.linear(hidden, head_weight).float()


class HeadLossWithGradients(torch.autograd.Function):
    """The mean cross-entropy of a bias-free linear head's logits over [N, D] hidden states, chunk by chunk,
    with the gradients for hidden states and head weight worked out as each chunk's logits are."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor, chunk_size: int):
        count = len(targets)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(head_weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, count, chunk_size):
            chunk, chunk_targets = hidden[start:start + chunk_size], targets[start:start + chunk_size]
            logits = chunk_logits(chunk, head_weight)  # [n, V]
            log_normalizer = logits.logsumexp(dim=-1)  # [n]
            total += (log_normalizer - logits.gather(1, chunk_targets[:, None]).squeeze(1)).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            grad_logits = logits.sub_(log_normalizer[:, None]).exp_()  # the softmax, in place: [n, V]
            grad_logits[torch.arange(len(chunk_targets)), chunk_targets] -= 1
            grad_logits = grad_logits.div_(count).to(chunk.dtype)  # d mean loss / d logits
            if grad_hidden is not None:
                grad_hidden[start:start + chunk_size] = grad_logits @ head_weight
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ chunk).float()
        ctx.grad_hidden, ctx.grad_weight, ctx.weight_dtype = grad_hidden, grad_weight, head_weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden = ctx.grad_hidden * grad_loss.to(ctx.grad_hidden.dtype) if ctx.grad_hidden is not None else None
        grad_weight = (ctx.grad_weight * grad_loss).to(ctx.weight_dtype) if ctx.grad_weight is not None else None
        return grad_hidden, grad_weight, None, None


def fits_fused_loss(head: nn.Module) -> bool:
    """A plain bias-free linear head whose weight is whole here (not a quantised layer, a LoRA-wrapped
    head, or a DeepSpeed ZeRO-3 partition that only the module's own call gathers)."""
    return type(head) is nn.Linear and head.bias is None and not hasattr(head.weight, "ds_id")


def scored_hidden_states(decoder: nn.Module, inputs_embeds: torch.Tensor, labels: torch.Tensor, **masks):
    """-> (the decoder's [B, T, D] hidden states, [N, D] those a label scores, [N] their targets, [N] their
    rows). Position t predicts token t + 1, so a label at t + 1 scores the hidden state at t."""
    hidden = decoder(inputs_embeds=inputs_embeds, use_cache=False, **masks).last_hidden_state
    next_labels = labels[:, 1:].to(hidden.device)  # [B, T-1]
    scored = next_labels != IGNORE_INDEX  # [B, T-1]
    return hidden, hidden[:, :-1][scored], next_labels[scored], scored.nonzero()[:, 0]


def zero_loss(head: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The loss of a batch with nothing to score: zero, but through the head (DDP waits for its gradient)."""
    return head(hidden[:1, :1]).float().sum() * 0.0


def token_losses(llm: nn.Module, inputs_embeds: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None,
                 **masks) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ([N] loss of each labelled token, [N] its row in the batch), in batch order. `masks`: the
    attention_mask, or for a packed batch position_ids (and attention_mask None)."""
    decoder, head = decoder_and_head(llm)
    hidden, scored_hidden, targets, rows = scored_hidden_states(decoder, inputs_embeds, labels, **masks)
    if not len(targets):
        return zero_loss(head, hidden).reshape(1), rows.new_zeros(1)
    recompute = torch.is_grad_enabled() and scored_hidden.requires_grad
    chunk_size = rows_per_chunk(head.weight.shape[0], chunk_size)
    losses = [checkpoint(_chunk_losses, head, chunk, chunk_targets, use_reentrant=False) if recompute
              else _chunk_losses(head, chunk, chunk_targets)
              for chunk, chunk_targets in zip(scored_hidden.split(chunk_size), targets.split(chunk_size))]
    return torch.cat(losses), rows


def mean_token_loss(llm: nn.Module, inputs_embeds: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None,
                    **masks) -> torch.Tensor:
    """The mean loss over every labelled token of the batch: transformers' causal-LM loss."""
    decoder, head = decoder_and_head(llm)
    if not (torch.is_grad_enabled() and fits_fused_loss(head)):
        return token_losses(llm, inputs_embeds, labels, chunk_size, **masks)[0].mean()
    hidden, scored_hidden, targets, _ = scored_hidden_states(decoder, inputs_embeds, labels, **masks)
    if not len(targets):
        return zero_loss(head, hidden)
    return HeadLossWithGradients.apply(scored_hidden, head.weight, targets,
                                       rows_per_chunk(head.weight.shape[0], chunk_size))


@dataclass
class RowScores:
    """What a batch's rows' labelled (answer) tokens score: [B] their summed loss, [B] their count, and [B]
    whether each is the head's likeliest token, so that greedy decoding would write the answer (what a
    harness asks of a continuation: lmms-eval's loglikelihood)."""

    total: torch.Tensor
    tokens: torch.Tensor
    greedy: torch.Tensor

    def losses(self, reduction: str = "mean") -> torch.Tensor:
        """[B] each row's summed ("sum") or mean loss: how unlikely the model finds that row's answer."""
        return self.total if reduction == "sum" else self.total / self.tokens


@torch.no_grad()
def row_scores(llm: nn.Module, inputs_embeds: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None,
               **masks) -> RowScores:
    """Each row's answer scored chunk by chunk, as token_losses computes the losses."""
    decoder, head = decoder_and_head(llm)
    _, scored_hidden, targets, rows = scored_hidden_states(decoder, inputs_embeds, labels, **masks)
    chunk_size = rows_per_chunk(head.weight.shape[0], chunk_size)
    losses, misses = [], []
    for chunk, chunk_targets in zip(scored_hidden.split(chunk_size), targets.split(chunk_size)):
        logits = head(chunk).float()  # [n, V]
        losses.append(F.cross_entropy(logits, chunk_targets, reduction="none"))
        misses.append((logits.argmax(dim=-1) != chunk_targets).float())
    per_row = torch.zeros(3, len(labels), device=scored_hidden.device)  # total, tokens, misses
    if losses:
        per_row[0].index_add_(0, rows, torch.cat(losses))
        per_row[1].index_add_(0, rows, torch.ones_like(rows, dtype=per_row.dtype))
        per_row[2].index_add_(0, rows, torch.cat(misses))
    return RowScores(per_row[0], per_row[1], per_row[2] == 0)
