"""The LM head and the cross-entropy only at the positions a label scores.

A causal LM's head maps every position to vocabulary logits, [B, T, V]; at a 32k vocabulary those are
larger than the model's activations, yet only the answer tokens (about one position in eight in a
MiniGPT-4 stage-2 batch) carry a label. Here the decoder runs as usual, the hidden states of the labelled
positions are gathered ([N, D]), and the head and the loss run on them `chunk_size` rows at a time. In
training each chunk's logits are recomputed in the backward pass instead of kept, so memory holds one
chunk's logits at most. The loss and every gradient are the full computation's (tests/test_scored_loss.py).
"""
from __future__ import annotations

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


def _chunk_losses(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[n, D] hidden states, [n] targets -> [n] losses, computed in float32 as transformers does."""
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def token_losses(llm: nn.Module, inputs_embeds: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024,
                 **masks) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ([N] loss of each labelled token, [N] its row in the batch), in batch order. Position t predicts
    token t + 1, so a label at t + 1 scores the hidden state at t. `masks`: the attention_mask, or for a
    packed batch position_ids (and attention_mask None)."""
    decoder, head = decoder_and_head(llm)
    hidden = decoder(inputs_embeds=inputs_embeds, use_cache=False, **masks).last_hidden_state
    next_labels = labels[:, 1:].to(hidden.device)  # [B, T-1]
    scored = next_labels != IGNORE_INDEX  # [B, T-1]
    scored_hidden, targets = hidden[:, :-1][scored], next_labels[scored]  # [N, D], [N]
    rows = scored.nonzero()[:, 0]  # [N]
    if not len(targets):  # nothing to score: a zero loss that still reaches the head (DDP waits for its gradient)
        return head(hidden[:1, :1]).float().sum().reshape(1) * 0.0, rows.new_zeros(1)
    recompute = torch.is_grad_enabled() and scored_hidden.requires_grad
    losses = [checkpoint(_chunk_losses, head, chunk, chunk_targets, use_reentrant=False) if recompute
              else _chunk_losses(head, chunk, chunk_targets)
              for chunk, chunk_targets in zip(scored_hidden.split(chunk_size), targets.split(chunk_size))]
    return torch.cat(losses), rows


def mean_token_loss(llm: nn.Module, inputs_embeds: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024,
                    **masks) -> torch.Tensor:
    """The mean loss over every labelled token of the batch: transformers' causal-LM loss."""
    return token_losses(llm, inputs_embeds, labels, chunk_size, **masks)[0].mean()


def row_losses(llm: nn.Module, inputs_embeds: torch.Tensor, labels: torch.Tensor, reduction: str = "mean",
               chunk_size: int = 1024, **masks) -> torch.Tensor:
    """[B] each row's summed (reduction "sum") or mean loss over its labelled tokens: how unlikely the model
    finds that row's answer."""
    losses, rows = token_losses(llm, inputs_embeds, labels, chunk_size, **masks)
    summed = torch.zeros(len(labels), device=losses.device).index_add_(0, rows, losses)
    if reduction == "sum":
        return summed
    counts = torch.zeros(len(labels), device=losses.device).index_add_(0, rows, torch.ones_like(losses))
    return summed / counts
