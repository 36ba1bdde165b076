"""Causal language-modelling loss that projects to the vocabulary only where a label exists.

    loss, n_tokens = model_lm_loss(model, batch)       # via the one forward path (deltatune.forward)
    loss, n_tokens = lm_loss(hidden, lm_head, labels)  # from hidden states (B, T, H) you already have

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

from deltatune.data.labels import IGNORE_INDEX  # the mask the pipeline writes; also imported from here


def labelled_logits(hidden: torch.Tensor, lm_head, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(fp32 logits (N, V) of the N positions whose next token carries a label, or None when
    there are none; keep (B, T-1) bool). Position t predicts labels[t + 1]."""
    keep = labels[:, 1:].to(hidden.device) != IGNORE_INDEX  # (B, T-1) bool
    if not keep.any():
        return None, keep
    picked = hidden[:, :-1, :][keep]  # (N, H): only labelled positions reach the projection
    return lm_head(picked).float(), keep  # fp32 for a stable log-softmax


def lm_loss(
    hidden: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    teacher_ids: torch.Tensor | None = None,
    teacher_probs: torch.Tensor | None = None,
    example_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions, and how many there were.

    hidden: (B, T, H) final hidden states; labels: (B, T) token ids, -100 where no loss.
    Position t predicts labels[t + 1] (the causal shift happens here, as in HF).
    teacher_ids / teacher_probs: optional (B, T, K) soft targets (deltatune.data.distill);
    where a token has them (probs sum > 0) its loss is -sum_k p_k log q(id_k) instead.
    example_weights: optional (B,) multipliers of each example's token losses; the result is
    still divided by the token count (not the weight sum), so micro-batches add up as before.
    With no labelled token the loss is a zero that still carries a graph (backward is a no-op).
    """
    logits, keep = labelled_logits(hidden, lm_head, labels)
    if logits is None:
        return hidden.sum() * 0.0, 0
    n_tokens = logits.shape[0]
    targets = labels[:, 1:].to(hidden.device)[keep]  # (N,)
    if teacher_probs is None and example_weights is None:
        return F.cross_entropy(logits, targets, reduction="mean"), n_tokens
    log_q = F.log_softmax(logits, dim=-1)  # (N, V), once for both kinds of target
    per_token = -log_q.gather(1, targets[:, None]).squeeze(1)  # (N,) hard targets
    if teacher_probs is not None:
        probs = teacher_probs[:, 1:][keep].to(logits.dtype)  # (N, K)
        soft = -(probs * log_q.gather(1, teacher_ids[:, 1:][keep])).sum(-1)  # (N,)
        per_token = torch.where(probs.sum(-1) > 0, soft, per_token)
    if example_weights is not None:
        rows = keep.nonzero(as_tuple=True)[0]  # (N,): the example each labelled token belongs to
        per_token = per_token * example_weights.to(logits.device, logits.dtype)[rows]
    return per_token.mean(), n_tokens


def model_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """`lm_loss` for a causal LM with its method active: the forward path's hidden states, then
    the head on labelled positions. The loss function every recipe and the evaluator use."""
    from deltatune.forward import decoder_hidden, output_head

    hidden, _ = decoder_hidden(model, batch["input_ids"], batch.get("attention_mask"))
    return lm_loss(hidden, output_head(model), batch["labels"],
                   batch.get("teacher_ids"), batch.get("teacher_probs"), batch.get("loss_weights"))
