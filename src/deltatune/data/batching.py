"""Length-bucketed batch order and padding collation.

    sampler = BucketedBatches(dataset, batch_size=8, seed=0)
    for indices in sampler.batches(epoch):             # list[list[int]], same every run
        batch = collate([dataset[i] for i in indices], pad_id=tokenizer.pad_token_id)
        # batch["input_ids"]: (B, T) LongTensor, right-padded; labels IGNORE_INDEX (-100) on pads

Bucketing: shuffle all indices, cut them into chunks of ~50 batches, sort each chunk by
length and slice it into batches, then shuffle the batch order. Examples of similar length
share a batch (less padding, fewer wasted FLOPs) while the order stays random. Everything
derives from one `random.Random(seed, epoch)`, so resume can replay the same order.

`collate` also carries what replay puts on examples: `loss_weight` -> `loss_weights` (B,),
and teacher top-k targets -> `teacher_ids` / `teacher_probs` (B, T, K) (`collate_teacher`:
plain tensor padding, the targets themselves come from `deltatune.replay.teacher`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from deltatune.data.labels import IGNORE_INDEX

CHUNK_BATCHES = 50  # batches per sort chunk: big enough to find neighbours, small enough to mix


def example_length(example: dict) -> int:
    """Tokens an example puts in a batch row: its `length` when it says (a preference pair: its
    longer answer), else its `input_ids`."""
    return int(example["length"]) if "length" in example else len(example["input_ids"])


class BucketedBatches:
    """Deterministic, length-bucketed batches of example indices for each epoch."""

    def __init__(self, dataset: Sequence, batch_size: int, seed: int = 0, chunk_batches: int = CHUNK_BATCHES):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.lengths = [example_length(dataset[i]) for i in range(len(dataset))]
        self.batch_size = batch_size
        self.seed = seed
        self.chunk_batches = chunk_batches

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller)."""
        return -(-len(self.lengths) // self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        # an int seed mixing (seed, epoch): str/tuple seeds would depend on hashing details
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        chunk = self.batch_size * self.chunk_batches
        out: list[list[int]] = []
        for start in range(0, len(order), chunk):
            # sorted() is stable, so ties keep the shuffled order
            part = sorted(order[start : start + chunk], key=self.lengths.__getitem__)
            out += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        rng.shuffle(out)
        return out


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Plain shuffled batches (no bucketing): the baseline bucketing is measured against."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def padding_fraction(batches: list[list[int]], lengths: Sequence[int]) -> float:
    """Share of the padded (B, T_max) cells that are padding, over all batches."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / padded if padded else 0.0


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of {"input_ids", "labels"} into (B, T) LongTensors + attention mask."""
    width = max(len(ex["input_ids"]) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for row, ex in enumerate(examples):
        n = len(ex["input_ids"])
        input_ids[row, :n] = torch.tensor(ex["input_ids"], dtype=torch.long)
        labels[row, :n] = torch.tensor(ex["labels"], dtype=torch.long)
        attention_mask[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if any("loss_weight" in ex for ex in examples):  # e.g. data.replay_weight
        batch["loss_weights"] = torch.tensor([float(ex.get("loss_weight", 1.0)) for ex in examples])  # (B,)
    if any("teacher_ids" in ex for ex in examples):  # replay distillation targets
        batch.update(collate_teacher(examples, width))
    return batch


def collate_teacher(examples: list[dict], width: int) -> dict[str, torch.Tensor]:
    """(B, T, K) `teacher_ids` and `teacher_probs` (all-zero probs where a token has no teacher
    target: the loss uses the plain label there); {} when no example carries targets.

    The targets are per-token lists (None or K ids / K probs) that
    `deltatune.replay.teacher.attach_teacher_topk` put on the examples."""
    k = next((len(ids) for ex in examples for ids in ex.get("teacher_ids") or [] if ids), 0)
    if k == 0:
        return {}
    ids = torch.zeros((len(examples), width, k), dtype=torch.long)
    probs = torch.zeros((len(examples), width, k), dtype=torch.float32)
    for row, ex in enumerate(examples):
        cols = [col for col, tid in enumerate(ex.get("teacher_ids") or []) if tid is not None]
        if cols:  # one tensor per example, not one per token (this runs for every batch)
            ids[row, cols] = torch.tensor([ex["teacher_ids"][c] for c in cols])
            probs[row, cols] = torch.tensor([ex["teacher_probs"][c] for c in cols])
    return {"teacher_ids": ids, "teacher_probs": probs}
