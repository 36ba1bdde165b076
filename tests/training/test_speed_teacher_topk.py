"""The replay teacher's top-k taken chunk by chunk of positions: exactly the top-k values and
ids of the whole-batch projection, and no (positions x vocabulary) tensor for the batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import AutoModelForCausalLM

from deltatune.data.tokenize import TokenizedDataset
from deltatune.replay.teacher import attach_teacher_topk, chunk_bounds, topk_in_chunks


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


def test_chunk_bounds_cover_every_row_and_keep_matmuls_big_enough():
    assert chunk_bounds(100, 32) == [(0, 32), (32, 64), (64, 100)]  # 4 last rows join the chunk before
    assert chunk_bounds(120, 32) == [(0, 32), (32, 64), (64, 96), (96, 120)]
    assert chunk_bounds(40, 2) == [(0, 16), (16, 40)]  # never fewer than MIN_CHUNK_ROWS per projection
    assert chunk_bounds(5, 32) == [(0, 5)] and chunk_bounds(0, 32) == []


@pytest.mark.parametrize("n", [1, 2, 129, 300])
@pytest.mark.parametrize("chunk", [2, 64, 128, 1000])
def test_topk_in_chunks_is_exact(base, n, chunk):
    head = base.get_output_embeddings()
    picked = torch.randn(n, head.weight.shape[1], generator=torch.Generator().manual_seed(n))
    with torch.no_grad():
        want = head(picked).float().topk(16, dim=-1)
        values, ids = topk_in_chunks(picked, head, 16, chunk)
    assert torch.equal(ids, want.indices) and torch.equal(values, want.values)


class _Biggest(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.biggest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.biggest = max(self.biggest, t.numel())
        return out


def _replay_set(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n):
        length = 30 + 9 * i
        ids = torch.randint(5, 1000, (length,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * 10 + ids[10:]})
    return TokenizedDataset(examples)


def test_attach_teacher_topk_same_targets_in_chunks(base):
    """Chunks of 80 positions give the targets the whole batch's (N, V) projection gave, and
    the largest tensor is a chunk's logits, not the batch's."""
    whole, chunked = _replay_set(), _replay_set()
    vocab = base.get_output_embeddings().weight.shape[0]
    attach_teacher_topk(base, whole, k=8, pad_id=0, batch_size=3, chunk_positions=10**6)
    with _Biggest() as spy:
        attach_teacher_topk(base, chunked, k=8, pad_id=0, batch_size=3, chunk_positions=80)
    for a, b in zip(whole.examples, chunked.examples):
        assert a["teacher_ids"] == b["teacher_ids"] and a["teacher_probs"] == b["teacher_probs"]
    labelled = sum(1 for ex in whole.examples[3:] for y in ex["labels"][1:] if y != -100)  # 168: chunks 80 + 88
    assert labelled > 96 and spy.biggest == 88 * vocab  # 88 x V (80 x V > the head's own V x 64 weight)
