"""train.gradient_checkpointing: the decoder layers recompute their activations in backward
and the loss and gradients stay the same (fp32, atol 1e-5), also with frozen embeddings (the
LoRA family: the layers' inputs do not require grad) and with packing; methods that feed the
layers through the KV cache are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig
from deltatune.data.batching import collate
from deltatune.data.packing import collate_packed
from deltatune.errors import DeltatuneError
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.registry import METHODS
from deltatune.training.speed import prepare_for_training

from method_examples import EXAMPLES  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)


def _examples():
    gen = torch.Generator().manual_seed(7)
    out = []
    for length, prompt in ((12, 4), (7, 2), (10, 6)):
        ids = torch.randint(5, 1000, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def _with_method(base, name):
    model = copy.deepcopy(base)
    torch.manual_seed(1)
    core.apply_method(model, METHODS[name].config_cls.model_validate(EXAMPLES[name]))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # off their init, so LoRA's B (zero at init) passes gradients on
        for p in core.installed_method(model)[2].trainable():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.train()


def _run(model, batch):
    model.zero_grad(set_to_none=True)
    loss, n = model_lm_loss(model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _count_layer_forwards(model):
    calls = []
    for layer in model.get_decoder().layers:  # a pre-hook: the recompute may stop early, before a layer's end
        layer.self_attn.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("name", ["lora", "dora", "ia3", "adapter", "prompt", "full"])
def test_same_loss_and_grads(base, name):
    """Dropout-free configs in train mode: the recomputed forward is the same function."""
    model = _with_method(base, name)
    batch = collate(_examples(), 0)
    plain = _run(model, batch)
    twin = model  # the same model, checkpointing switched on in place
    report = prepare_for_training(twin, TrainConfig(gradient_checkpointing=True))
    assert report == {"gradient_checkpointing": True}
    calls = _count_layer_forwards(twin)
    checked = _run(twin, batch)
    layers = twin.config.num_hidden_layers
    assert len(calls) == 2 * layers  # each layer ran again in backward: it really recomputed
    torch.testing.assert_close(checked[0], plain[0], atol=TOL, rtol=0)
    assert checked[1].keys() == plain[1].keys() and plain[1]
    for k in plain[1]:
        torch.testing.assert_close(checked[1][k], plain[1][k], atol=TOL, rtol=0, msg=k)


def test_frozen_embeddings_get_layer_gradients(base):
    """The classic pitfall: with frozen embeddings nothing entering layer 0 requires grad; the
    non-reentrant checkpoint still gives layer 0's LoRA weights their gradient."""
    model = _with_method(base, "lora")
    assert not model.get_input_embeddings().weight.requires_grad
    prepare_for_training(model, TrainConfig(gradient_checkpointing=True))
    _, grads = _run(model, collate(_examples(), 0))
    first = [k for k in grads if k.startswith("model.layers.0.")]
    assert first and all(grads[k].abs().sum() > 0 for k in first)


def test_with_packing(base):
    model = _with_method(base, "lora")
    examples = _examples()
    plain = _run(model, collate(examples, 0))
    prepare_for_training(model, TrainConfig(gradient_checkpointing=True, packing=True))
    packed = _run(model, collate_packed(examples))
    torch.testing.assert_close(packed[0], plain[0], atol=TOL, rtol=0)
    for k in plain[1]:
        torch.testing.assert_close(packed[1][k], plain[1][k], atol=TOL, rtol=0, msg=k)


@pytest.mark.parametrize("name", ["prefix", "ptuning_v2"])
def test_kv_cache_methods_are_refused(base, name):
    model = _with_method(base, name)
    refusal = rf"train\.gradient_checkpointing: the installed method \({name}\).*KV cache"
    with pytest.raises(DeltatuneError, match=refusal):
        prepare_for_training(model, TrainConfig(gradient_checkpointing=True))
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
