"""Validation split over processes (ddp): each process measures every world-th example of the
length-sorted set and the loss sums are added before dividing — the same loss as one process
measuring everything, with each process doing only its share."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.errors import DeltatuneError
from deltatune.training.distributed import ProcessGroup
from deltatune.training.validator import validation_loss


class RecordingGroup(ProcessGroup):
    """One rank of a 2-process group with the collective replaced: `sum` records this rank's
    part and hands back the parts of every rank seen so far (the test adds them itself)."""

    parts: list

    def sum(self, values):
        self.parts.append(list(values))
        return list(values)


def _examples(n=7, seed=3):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 12 + 5 * i
        ids = torch.randint(5, 1000, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * 4 + ids[4:]})
    return out


def test_the_shares_add_up_to_the_single_process_loss(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    examples = _examples()
    whole = validation_loss(model, examples, batch_size=2, pad_id=0)
    parts = []
    for rank in (0, 1):
        group = RecordingGroup(rank=rank, world=2)
        group.parts = parts
        validation_loss(model, examples, batch_size=2, pad_id=0, split=group)
    (loss0, tokens0), (loss1, tokens1) = parts
    assert tokens0 + tokens1 == sum(len(e["input_ids"]) - 4 for e in examples)
    assert 0 < tokens0 and 0 < tokens1  # each process measured only a share
    assert tokens0 != tokens0 + tokens1 and tokens1 != tokens0 + tokens1
    assert (loss0 + loss1) / (tokens0 + tokens1) == pytest.approx(whole, abs=1e-5)


def test_a_process_with_no_examples_still_joins_the_sum(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    parts = []
    group = RecordingGroup(rank=1, world=2)
    group.parts = parts
    # rank 1 of 2 with one example: nothing to measure, but it must still call the collective
    # (rank 0 waits in it); this fake hands back only its own zeros, hence the error here
    with pytest.raises(DeltatuneError, match="no labelled tokens"):
        validation_loss(model, _examples(n=1), batch_size=2, pad_id=0, split=group)
    assert parts == [[0.0, 0]]
