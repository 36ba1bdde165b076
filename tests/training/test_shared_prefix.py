"""The shared-prefix forward (deltatune.shared_prefix) against the plain decoder call: the same
hidden states, losses and gradients on chat batches of the tiny Llama."""

from __future__ import annotations

import pytest
import torch

from deltatune.config import DataConfig
from deltatune.data import build_sft_dataset, collate
from deltatune.forward import decoder_hidden
from deltatune.methods.core import apply_method
from deltatune.methods.registry import MethodConfig
from deltatune.shared_prefix import shared_prefix_hidden, shared_prefix_length, supports_shared_prefix

from pydantic import TypeAdapter

TOLERANCE = 1e-5  # fp32: the same sums, attention over the prefix split from the rest


def method_config(raw: dict):
    return TypeAdapter(MethodConfig).validate_python(raw)


@pytest.fixture
def tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir), AutoTokenizer.from_pretrained(tiny_llama_dir)


def chat_batch(tokenizer, n=4):
    records = [{"instruction": f"Where is office {i}?" + " really" * i, "input": "", "output": f"Floor {i}."}
               for i in range(n)]
    data = build_sft_dataset(records, tokenizer, DataConfig(train="x", max_length=128))
    return collate(data.examples, tokenizer.pad_token_id)


def test_prefix_length_stops_at_the_first_difference_or_padding():
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 9, 9], [1, 2, 3, 4, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert shared_prefix_length(ids, mask) == 3
    assert shared_prefix_length(ids[:1], mask[:1]) == 0  # one row: nothing to share
    same = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert shared_prefix_length(same, torch.ones_like(same)) == 2  # every row keeps a token
    padded = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert shared_prefix_length(padded, torch.tensor([[1, 1, 1], [1, 0, 0]])) == 1


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
                                    {"name": "full"}], ids=["lora", "full"])
def test_same_hidden_states_and_gradients_as_the_plain_path(tiny, method):
    model, tokenizer = tiny
    batch = chat_batch(tokenizer)
    assert shared_prefix_length(batch["input_ids"], batch["attention_mask"]) >= 20  # the system prompt
    installed = apply_method(model, method_config(method))
    model.train()
    results = []
    for run in (lambda: decoder_hidden(model, batch["input_ids"], batch["attention_mask"])[0],
                lambda: shared_prefix_hidden(model, batch["input_ids"], batch["attention_mask"])):
        hidden = run()
        real = batch["attention_mask"].bool()
        loss = (hidden[real] ** 2).mean()
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        results.append((hidden[real].detach(), grads))
    (plain_hidden, plain_grads), (shared_hidden, shared_grads) = results
    torch.testing.assert_close(shared_hidden, plain_hidden, atol=TOLERANCE, rtol=TOLERANCE)
    assert plain_grads.keys() == shared_grads.keys() and len(plain_grads) == len(installed.trainable())
    for name in plain_grads:
        torch.testing.assert_close(shared_grads[name], plain_grads[name], atol=TOLERANCE, rtol=1e-4, msg=name)


def test_methods_with_decoder_hooks_are_not_offered_the_shortcut(tiny):
    model, tokenizer = tiny
    assert supports_shared_prefix(model)
    apply_method(model, method_config({"name": "prompt", "num_virtual_tokens": 4}), tokenizer=tokenizer)
    assert not supports_shared_prefix(model)
