"""One forward over a pair batch: answer log-probs, or reward-head scores, split into chosen / rejected.

    logps, counts = pair_logps(model, batch)             # (2B,) summed answer log-probs, (2B,) tokens
    pair = policy_and_reference(model, batch, reference)  # PairLogps for deltatune.losses.preference
    chosen, rejected = pair_scores(model, head, batch, "last")   # (B,), (B,) reward-model scores

A pair batch (deltatune.data.preference.collate_pairs) stacks the B chosen answers over the B
rejected ones, so one forward scores both; `halves` cuts any (2B, ...) result back in two.
"""

from __future__ import annotations

import torch

from deltatune.forward import decoder_hidden, output_head
from deltatune.losses.logps import sequence_logps
from deltatune.losses.preference import PairLogps
from deltatune.models.heads import reward_scores


def halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first half, second half) along dim 0: the chosen rows, the rejected rows."""
    n = x.shape[0] // 2
    return x[:n], x[n:]


def pair_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """((2B,) summed log-probs of each row's answer tokens, (2B,) answer token counts)."""
    hidden, _ = decoder_hidden(model, batch["input_ids"], batch["attention_mask"])  # (2B, T, H)
    return sequence_logps(hidden, output_head(model), batch["labels"])


def reference_logps(batch: dict, reference) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """(ref chosen (B,), ref rejected (B,)): precomputed on the batch, else one reference forward;
    (None, None) without a reference (reference-free losses)."""
    if "ref_chosen" in batch:
        return batch["ref_chosen"].float(), batch["ref_rejected"].float()
    if reference is None:
        return None, None
    with reference.model() as ref:
        logps, _ = pair_logps(ref, batch)
    return halves(logps.float())


def policy_and_reference(model, batch: dict, reference) -> PairLogps:
    """The policy's answer log-probs (with gradients) beside the reference's (without)."""
    logps, counts = pair_logps(model, batch)
    (pc, pr), (nc, nr) = halves(logps), halves(counts)
    rc, rr = reference_logps(batch, reference)
    return PairLogps(pc, pr, nc, nr, rc, rr)


def pair_scores(model, head, batch: dict, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """((B,) chosen scores, (B,) rejected scores): the head on each answer, read as `pooling`
    (preference.reward_pooling) says."""
    return halves(reward_scores(model, head, batch, pooling))
