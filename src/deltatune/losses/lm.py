"""Causal language-modelling loss that projects to the vocabulary only where a label exists.

    loss, n_tokens = model_lm_loss(model, batch)       # via the one forward path (deltatune.forward)
    loss, n_tokens = lm_loss(hidden, lm_head, labels)  # from hidden states (B, T, H) you already have

The usual recipe computes `lm_head(hidden)` for every position (B x T x V floats) and then
throws most of it away: prompt and padding positions carry label -100. For SFT most tokens
are prompt, and the vocabulary projection is the biggest matmul in a small model, so we
gather the hidden states of labelled positions first and project only those. The value and
gradients equal Hugging Face's `model(..., labels=labels).loss` (mean over labelled tokens).

`chunk_tokens=N` (`train.ce_chunk_tokens`) goes further: the labelled positions go through the
head and the cross-entropy N at a time, and each chunk's logits are recomputed in backward
(`torch.utils.checkpoint`), so no (labelled tokens x vocab) tensor ever exists for the batch:
peak memory holds one chunk's logits, for one more head matmul per chunk. A packed batch
(`deltatune.data.packing`) runs through the same loss: its labels already keep the shift inside
each example.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from deltatune.data.labels import IGNORE_INDEX  # the mask the pipeline writes; also imported from here


def labelled_hidden(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(hidden states (N, H) of the N positions whose next token carries a label, or None when
    there are none; keep (B, T-1) bool). Position t predicts labels[t + 1]."""
    keep = labels[:, 1:].to(hidden.device) != IGNORE_INDEX  # (B, T-1) bool
    if not keep.any():
        return None, keep
    return hidden[:, :-1, :][keep], keep  # (N, H): only labelled positions reach the projection


def labelled_logits(hidden: torch.Tensor, lm_head, labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(fp32 logits (N, V) of the N positions whose next token carries a label, or None when
    there are none; keep (B, T-1) bool). Position t predicts labels[t + 1]."""
    picked, keep = labelled_hidden(hidden, labels)
    if picked is None:
        return None, keep
    return lm_head(picked).float(), keep  # fp32 for a stable log-softmax


def lm_loss(
    hidden: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    teacher_ids: torch.Tensor | None = None,
    teacher_probs: torch.Tensor | None = None,
    example_weights: torch.Tensor | None = None,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over labelled positions, and how many there were.

    hidden: (B, T, H) final hidden states; labels: (B, T) token ids, -100 where no loss.
    Position t predicts labels[t + 1] (the causal shift happens here, as in HF).
    teacher_ids / teacher_probs: optional (B, T, K) soft targets (deltatune.data.distill);
    where a token has them (probs sum > 0) its loss is -sum_k p_k log q(id_k) instead.
    example_weights: optional (B,) multipliers of each example's token losses, or (B, T) per-token
    ones (a packed row: each token's example's weight); the result is still divided by the token
    count (not the weight sum), so micro-batches add up as before.
    chunk_tokens: the chunked cross-entropy (module docstring); None: all positions at once.
    With no labelled token the loss is a zero that still carries a graph (backward is a no-op).
    """
    if chunk_tokens is not None:
        return chunked_lm_loss(hidden, lm_head, labels, chunk_tokens, teacher_ids, teacher_probs, example_weights)
    logits, keep = labelled_logits(hidden, lm_head, labels)
    if logits is None:
        return hidden.sum() * 0.0, 0
    n_tokens = logits.shape[0]
    targets = labels[:, 1:].to(hidden.device)[keep]  # (N,)
    if teacher_probs is None and example_weights is None:
        return F.cross_entropy(logits, targets, reduction="mean"), n_tokens
    teacher = (teacher_ids[:, 1:][keep], teacher_probs[:, 1:][keep]) if teacher_probs is not None else None
    per_token = _token_losses(logits, targets, teacher)
    if example_weights is not None:
        per_token = per_token * _token_weights(example_weights, keep).to(logits.device, logits.dtype)
    return per_token.mean(), n_tokens


def _token_losses(logits: torch.Tensor, targets: torch.Tensor, teacher) -> torch.Tensor:
    """(N,) losses of (N, V) fp32 logits: -log q(target), or against the teacher's (ids, probs)
    (N, K) where a token has them."""
    log_q = F.log_softmax(logits, dim=-1)  # (N, V), once for both kinds of target
    per_token = -log_q.gather(1, targets[:, None]).squeeze(1)  # (N,) hard targets
    if teacher is not None:
        ids, probs = teacher
        probs = probs.to(logits.dtype)  # (N, K)
        soft = -(probs * log_q.gather(1, ids)).sum(-1)  # (N,)
        per_token = torch.where(probs.sum(-1) > 0, soft, per_token)
    return per_token


def _token_weights(example_weights: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(N,) weight of each labelled token from (B,) per-example or (B, T) per-token weights."""
    if example_weights.dim() == 2:  # a packed row: position t's target is token t + 1
        return example_weights[:, 1:].to(keep.device)[keep]
    rows = keep.nonzero(as_tuple=True)[0]  # (N,): the example each labelled token belongs to
    return example_weights.to(keep.device)[rows]


def _chunk_loss_sum(lm_head, picked, targets, teacher_ids, teacher_probs, weights) -> torch.Tensor:
    """Summed loss of one chunk of labelled positions (picked: (n, H)); its (n, V) logits live
    only inside this call (recomputed in backward by the checkpoint around it)."""
    logits = lm_head(picked).float()  # (n, V)
    if teacher_probs is None and weights is None:
        return F.cross_entropy(logits, targets, reduction="sum")
    per_token = _token_losses(logits, targets, (teacher_ids, teacher_probs) if teacher_probs is not None else None)
    if weights is not None:
        per_token = per_token * weights.to(logits.dtype)
    return per_token.sum()


def chunked_lm_loss(hidden, lm_head, labels, chunk_tokens: int, teacher_ids=None, teacher_probs=None,
                    example_weights=None) -> tuple[torch.Tensor, int]:
    """`lm_loss` with the head and the cross-entropy run `chunk_tokens` labelled positions at a
    time, each chunk checkpointed (module docstring). Same value and gradients."""
    picked, keep = labelled_hidden(hidden, labels)  # (N, H)
    if picked is None:
        return hidden.sum() * 0.0, 0
    targets = labels[:, 1:].to(hidden.device)[keep]  # (N,)
    ids = teacher_ids[:, 1:][keep] if teacher_probs is not None else None  # (N, K)
    probs = teacher_probs[:, 1:][keep] if teacher_probs is not None else None  # (N, K)
    weights = _token_weights(example_weights, keep) if example_weights is not None else None  # (N,)
    n_tokens = picked.shape[0]
    chunk_loss = partial(_chunk_loss_sum, lm_head)
    total = None
    for start in range(0, n_tokens, chunk_tokens):
        part = slice(start, start + chunk_tokens)
        piece = checkpoint(chunk_loss, picked[part], targets[part], None if ids is None else ids[part],
                           None if probs is None else probs[part], None if weights is None else weights[part],
                           use_reentrant=False)
        total = piece if total is None else total + piece
    return total / n_tokens, n_tokens


def model_lm_loss(model, batch: dict[str, torch.Tensor], ce_chunk_tokens: int | None = None,
                  shared_prefix: bool = False) -> tuple[torch.Tensor, int]:
    """`lm_loss` for a causal LM with its method active: the forward path's hidden states, then
    the head on labelled positions. The loss function every recipe and the evaluator use.
    A packed batch (`deltatune.data.packing`) runs as one row with its example boundaries;
    `ce_chunk_tokens` is `lm_loss`'s `chunk_tokens` (`train.ce_chunk_tokens`); `shared_prefix`
    runs the tokens every row starts with once (`train.shared_prefix`, deltatune.shared_prefix)."""
    from deltatune.data.packing import SEGMENTS_KEY
    from deltatune.forward import decoder_hidden, output_head
    from deltatune.shared_prefix import shared_prefix_hidden, supports_shared_prefix

    segments = batch.get(SEGMENTS_KEY)
    if segments is None and shared_prefix and supports_shared_prefix(model):
        hidden = shared_prefix_hidden(model, batch["input_ids"], batch.get("attention_mask"))
    elif segments is None:
        hidden, _ = decoder_hidden(model, batch["input_ids"], batch.get("attention_mask"))
    else:
        hidden, _ = decoder_hidden(model, batch["input_ids"], None, batch["position_ids"], segments=segments)
    return lm_loss(hidden, output_head(model), batch["labels"],
                   batch.get("teacher_ids"), batch.get("teacher_probs"), batch.get("loss_weights"),
                   chunk_tokens=ce_chunk_tokens)
