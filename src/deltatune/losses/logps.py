"""Log-probabilities of the labelled tokens under a causal LM, per sequence or per token.

    sums, counts = sequence_logps(hidden, lm_head, labels)  # (B,) fp32, (B,) long
    logps, mask = token_logps(hidden, lm_head, labels)      # (B, T-1) fp32 (0 off-mask), (B, T-1) bool

hidden: (B, T, H) final hidden states (deltatune.forward.decoder_hidden); labels: (B, T) token
ids with -100 (deltatune.data.labels.IGNORE_INDEX) where no loss. Position t predicts
labels[t + 1], the same causal shift as `losses/lm.py`, and like it only labelled positions go
through `lm_head` (`labelled_logits`). Preference losses (losses/preference.py) use the sums and
counts; RL-style objectives use the per-token values.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from deltatune.losses.lm import labelled_logits


def token_logps(
    hidden: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(labels[t + 1] | ..t) as fp32 (B, T-1), 0 where unlabelled; mask (B, T-1) bool).

    With no labelled token anywhere the zeros still carry a graph to `hidden`, so a caller's
    backward is a no-op rather than an error (as `lm_loss` does)."""
    logits, keep = labelled_logits(hidden, lm_head, labels)  # (N, V) fp32 or None; (B, T-1)
    if logits is None:
        return hidden[:, :-1, 0].float() * 0.0, keep
    targets = labels[:, 1:].to(hidden.device)[keep]  # (N,)
    picked = -F.cross_entropy(logits, targets, reduction="none")  # (N,) = log_softmax gathered
    # masked_scatter fills True slots in row-major order, the order boolean indexing picked them.
    out = torch.zeros(keep.shape, dtype=picked.dtype, device=picked.device)  # (B, T-1)
    return out.masked_scatter(keep, picked), keep


def sequence_logps(
    hidden: torch.Tensor,
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(label) over each row's labelled tokens (B,) fp32, labelled count (B,) long).

    A row with no labelled token gives sum 0 and count 0; dividing by the count is the
    caller's choice (length-averaged log-probs for IPO / SimPO / ORPO)."""
    logps, mask = token_logps(hidden, lm_head, labels)  # (B, T-1), (B, T-1)
    return logps.sum(dim=-1), mask.sum(dim=-1)
