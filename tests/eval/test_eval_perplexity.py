"""loss_and_perplexity against a hand computation with F.cross_entropy, one example at a time."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from deltatune.errors import DeltatuneError
from deltatune.data import collate
from deltatune.eval.perplexity import loss_and_perplexity


def make_examples(tokenizer):
    texts = ["Hello world, this is a test.", "Short one here", "A somewhat longer sentence about llamas and alpacas."]
    examples = []
    for i, text in enumerate(texts):
        ids = tokenizer(text)["input_ids"]
        labels = list(ids)
        labels[: i + 1] = [-100] * (i + 1)  # a "prompt" of varying length carries no loss
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def by_hand(model, examples):
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            logits = model(torch.tensor([ex["input_ids"]])).logits[0]  # (T, V), no padding at all
            labels = torch.tensor(ex["labels"])
            total += F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum").item()
            count += int((labels[1:] != -100).sum())
    return total / count, count


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_matches_hand_computation_for_any_batch_size(tiny, batch_size):
    model, tokenizer = tiny
    examples = make_examples(tokenizer)
    loss, count = by_hand(model, examples)
    got = loss_and_perplexity(model, tokenizer, SimpleNamespace(examples=examples), batch_size=batch_size)
    assert got["tokens"] == count
    assert got["loss"] == pytest.approx(loss, abs=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)


def test_accepts_ready_batches(tiny):
    model, tokenizer = tiny
    examples = make_examples(tokenizer)
    batches = [collate(examples[:2], tokenizer.pad_token_id), collate(examples[2:], tokenizer.pad_token_id)]
    loss, count = by_hand(model, examples)
    got = loss_and_perplexity(model, tokenizer, batches)
    assert got["tokens"] == count and got["loss"] == pytest.approx(loss, abs=1e-5)


def test_no_labels_is_an_error(tiny):
    model, tokenizer = tiny
    examples = [{"input_ids": [1, 2, 3], "labels": [-100, -100, -100]}]
    with pytest.raises(DeltatuneError, match="no labelled tokens"):
        loss_and_perplexity(model, tokenizer, examples)
