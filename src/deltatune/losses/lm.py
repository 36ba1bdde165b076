"""Causal language-modelling loss that projects to the vocabulary only where a label exists.

    out = model.get_decoder()(input_ids=ids, attention_mask=mask)
    loss, n_tokens = lm_loss(out.last_hidden_state, model.get_output_embeddings(), labels)

The usual recipe computes `lm_head(hidden)` for every position (B x T x V floats) and then
throws most of it away: prompt and padding positions carry label -100. For SFT most tokens
are prompt, and the vocabulary projection is the biggest matmul in a small model, so we
gather the hidden states of labelled positions first and project only those. The value and
gradients equal Hugging Face's `model(..., labels=labels).loss` (mean over labelled tokens).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def lm_loss(
    hidden: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions, and how many there were.

    hidden: (B, T, H) final hidden states; labels: (B, T) token ids, -100 where no loss.
    Position t predicts labels[t + 1] (the causal shift happens here, as in HF).
    With no labelled token the loss is a zero that still carries a graph (backward is a no-op).
    """
    shift_hidden = hidden[:, :-1, :]  # (B, T-1, H): position t ...
    shift_labels = labels[:, 1:].to(hidden.device)  # (B, T-1): ... predicts token t+1
    keep = shift_labels != IGNORE_INDEX  # (B, T-1) bool
    n_tokens = int(keep.sum())
    if n_tokens == 0:
        return hidden.sum() * 0.0, 0
    picked = shift_hidden[keep]  # (N, H): only labelled positions reach the projection
    logits = lm_head(picked).float()  # (N, V), fp32 for a stable log-softmax
    loss = F.cross_entropy(logits, shift_labels[keep], reduction="mean")
    return loss, n_tokens


def model_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """`lm_loss` for a HF causal LM: run the decoder stack, then the head on labelled positions."""
    decoder = model.get_decoder()
    out = decoder(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    return lm_loss(out.last_hidden_state, model.get_output_embeddings(), batch["labels"])
