"""Length-bucketed batches: deterministic, complete, and less padding than random batches."""

from __future__ import annotations

import random
from types import SimpleNamespace

import torch

from deltatune.data.batching import BucketedBatches, collate, padding_fraction, random_batches
from deltatune.data.labels import IGNORE_INDEX
from deltatune.data.sources import load_records
from deltatune.data.tokenize import build_sft_dataset


def fake_dataset(n: int = 1000, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"input_ids": [1] * rng.randint(5, 400), "labels": [1]} for _ in range(n)]


def test_deterministic_per_seed_and_epoch_and_complete():
    data = fake_dataset(203)
    a, b = BucketedBatches(data, 8, seed=3), BucketedBatches(data, 8, seed=3)
    assert a.batches(0) == b.batches(0) and a.batches(1) == b.batches(1)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != BucketedBatches(data, 8, seed=4).batches(0)
    flat = sorted(i for batch in a.batches(2) for i in batch)
    assert flat == list(range(203))  # every example exactly once per epoch
    assert len(a.batches(0)) == len(a) == 26
    assert sorted(len(batch) for batch in a.batches(0))[1:] == [8] * 25  # one short remainder


def test_bucketing_cuts_padding_vs_random_batches():
    data = fake_dataset(2000)
    lengths = [len(ex["input_ids"]) for ex in data]
    bucketed = padding_fraction(BucketedBatches(data, 8, seed=0).batches(0), lengths)
    plain = padding_fraction(random_batches(len(data), 8, seed=0), lengths)
    print(f"\npadding fraction, uniform lengths 5-400, batch 8: bucketed {bucketed:.1%}, random {plain:.1%}")
    assert bucketed < 0.05 and plain > 0.3


def test_bucketing_on_orgfacts(tok):
    records = load_records("builtin:orgfacts/train")
    cfg = SimpleNamespace(format="auto", max_length=512, train_on_prompt=False, system_prompt=None, pack=False)
    ds = build_sft_dataset(records, tok, cfg)
    bucketed = padding_fraction(BucketedBatches(ds, 8, seed=0).batches(0), ds.lengths)
    plain = padding_fraction(random_batches(len(ds), 8, seed=0), ds.lengths)
    print(f"\npadding fraction, orgfacts train, batch 8: bucketed {bucketed:.1%}, random {plain:.1%}")
    assert bucketed < plain / 2


def test_collate_right_pads():
    examples = [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].dtype == torch.long
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
