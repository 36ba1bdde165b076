"""Padding-free packing: a micro-batch's examples as one row of their real tokens only.

    batch = collate_packed([dataset[i] for i in indices], pad_id)   # same signature as `collate`
    # input_ids / labels / position_ids / attention_mask: (1, sum of lengths)
    # cu_seq_lens: (S + 1,) int32 boundaries of the S examples: [0, len_0, len_0 + len_1, ...]

A padded (B, T_max) batch spends every linear layer's FLOPs on padding; packed, the decoder
runs on the real tokens only. Three things keep a packed row equal to the examples run alone:

- position ids restart at 0 for each example (RoPE sees each example's own positions);
- attention stays inside each example: the forward path (`deltatune.forward.decoder_hidden`)
  hands `cu_seq_lens` to the attention, which runs causally per segment
  (`deltatune.training.segment_attention`; without it transformers still detects the restarting
  position ids and builds a block-diagonal mask, correct but (sum of lengths)^2 in size);
- the causal shift stays inside each example: the first token of every example carries label
  IGNORE_INDEX, so the last token of example k-1 predicts nothing (in a padded row it would
  predict padding, also unlabelled) and the set of (position, target) pairs, hence the loss and
  its unit count (`labelled_tokens`), equals the padded batch's.

`attention_mask` is all ones (every position is a real token): the loop counts tokens with it;
the forward path gives a packed batch no 2D mask (its segments come from `cu_seq_lens`).
Replay's `loss_weight` becomes per-token `loss_weights` (1, T) (the weight of each token's
example) and teacher targets are packed like the tokens, (1, T, K).
"""

from __future__ import annotations

import torch

from deltatune.data.batching import collate_teacher
from deltatune.data.labels import IGNORE_INDEX

SEGMENTS_KEY = "cu_seq_lens"  # a batch holding this key is packed


def is_packed(batch: dict) -> bool:
    """Whether `batch` came from `collate_packed` (one row of several examples)."""
    return SEGMENTS_KEY in batch


def collate_packed(examples: list[dict], pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """Concatenate {"input_ids", "labels"} examples into one (1, T) row; see the module
    docstring. `pad_id` is unused (nothing is padded); it keeps `collate`'s signature."""
    lengths = [len(ex["input_ids"]) for ex in examples]
    if not lengths or min(lengths) < 1:
        raise ValueError("collate_packed needs at least one example and no empty examples")
    ids, labels, positions = [], [], []
    for ex, n in zip(examples, lengths):
        ids += ex["input_ids"]
        labels += [IGNORE_INDEX] + list(ex["labels"][1:])  # nothing predicts an example's first token
        positions += range(n)
    total = sum(lengths)
    batch = {
        "input_ids": torch.tensor([ids], dtype=torch.long),  # (1, T)
        "labels": torch.tensor([labels], dtype=torch.long),  # (1, T)
        "position_ids": torch.tensor([positions], dtype=torch.long),  # (1, T): 0..len_i-1 per example
        "attention_mask": torch.ones((1, total), dtype=torch.long),  # (1, T): all real tokens
        SEGMENTS_KEY: torch.tensor([0] + _cumulative(lengths), dtype=torch.int32),  # (S + 1,)
    }
    if any("loss_weight" in ex for ex in examples):  # e.g. data.replay_weight, per token here
        weights = [float(ex.get("loss_weight", 1.0)) for ex in examples]
        batch["loss_weights"] = torch.tensor([[w for w, n in zip(weights, lengths) for _ in range(n)]])  # (1, T)
    if any("teacher_ids" in ex for ex in examples):  # replay distillation targets, packed alike
        joined = {"teacher_ids": [], "teacher_probs": []}
        for ex, n in zip(examples, lengths):
            joined["teacher_ids"] += ex.get("teacher_ids") or [None] * n
            joined["teacher_probs"] += ex.get("teacher_probs") or [None] * n
        batch.update(collate_teacher([joined], total))
    return batch


def _cumulative(lengths: list[int]) -> list[int]:
    out, running = [], 0
    for n in lengths:
        running += n
        out.append(running)
    return out
