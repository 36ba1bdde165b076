"""Every method in METHODS through the same checks, on the real paths the recipes use: the LM
loss and optimiser step of training, greedy generation with a KV cache, save/load, merge (or
its refusal), switching off for a reference forward, and hot-swapping over a shared base.

    .venv/bin/pytest tests/methods/test_method_matrix.py
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig
from deltatune.data.batching import collate
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.generation import SamplingParams, generate
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.registry import METHODS
from deltatune.training.step import OptimiserStep

# One representative config per method; a new method must add its row here.
EXAMPLES = {
    "full": {"name": "full"},
    "freeze": {"name": "freeze", "train_last_n_blocks": 1, "train_norm": True},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
    "ia3": {"name": "ia3"},
    "prompt": {"name": "prompt", "num_virtual_tokens": 5},
}
# Which parameter names must be trainable afterwards (all others frozen).
EXPECTED_TRAINABLE = {
    "full": lambda n: True,
    "freeze": lambda n: n.startswith("model.layers.1.") or n == "model.norm.weight",
    "lora": lambda n: re.search(r"\.lora_[AB]\.weight$", n) is not None,
    "ia3": lambda n: re.search(r"\.(k_proj|v_proj|down_proj)\.ia3_l$", n) is not None,
    "prompt": lambda n: n == "prompt_embeddings.weight",
}
# The tiny Llama: hidden 64, FFN 128, 2 layers, 4 heads of 16, 2 KV heads (k/v out 32).
H, FFN, LAYERS, KV = 64, 128, 2, 32
EXPECTED_COUNT = {  # the method's formula for the trainable element count (None: not checked here)
    "full": None,
    "freeze": None,
    "lora": LAYERS * 4 * ((H + H) + (H + KV) * 2 + (H + H)) + LAYERS * 4 * ((H + FFN) * 2 + (FFN + H)),
    "ia3": LAYERS * (KV + KV + FFN),
    "prompt": 5 * H,
}


def test_every_method_is_in_the_matrix():
    assert set(EXAMPLES) == set(METHODS) == set(EXPECTED_TRAINABLE) == set(EXPECTED_COUNT)


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def batch():
    """A right-padded SFT batch: prompt positions masked (-100), different lengths."""
    gen = torch.Generator().manual_seed(4)
    examples = []
    for length, prompt in ((11, 4), (7, 3), (9, 5)):
        tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
        examples.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
    return collate(examples, pad_id=0)


def _cfg(name):
    return METHODS[name].config_cls.model_validate(EXAMPLES[name])


def _trained(base, name, seed=2):
    """A copy of the base with the method applied and its parameters moved off their init
    (so the adapted model differs from the base: LoRA's B starts at zero)."""
    model = copy.deepcopy(base)
    cfg = _cfg(name)
    core.apply_method(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in core.installed_method(model)[2].trainable():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model, cfg


def _greedy(model, prompts, n=6):
    return [c.token_ids for c in generate(model, _Tok(), prompts, SamplingParams(max_new_tokens=n))]


class _Tok:
    """The least a tokenizer must do for `generate`: ids in, text out (no EOS ever)."""

    pad_token_id, eos_token_id = 0, None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_real_training_step_moves_exactly_the_methods_tensors(base, batch, name):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, _cfg(name))
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    wrong = [n for n, flag in flags.items() if flag != EXPECTED_TRAINABLE[name](n)]
    assert not wrong, f"unexpected requires_grad on {wrong[:5]}"
    trainable, total = core.count_parameters(model)
    assert trainable == sum(p.numel() for p in installed.trainable())
    if EXPECTED_COUNT[name] is not None:
        assert trainable == EXPECTED_COUNT[name]
    assert set(core.trainable_state_dict(model)) >= {n for n, f in flags.items() if f}

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=2, loss_fn=model_lm_loss)
    losses = [stepper.step([batch], step).loss for step in (1, 2)]  # two steps: LoRA's A moves once B != 0
    assert all(torch.isfinite(torch.tensor(losses)))
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == flags[n], f"{n}: trainable={flags[n]} but changed={changed}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_save_load_round_trip(base, ids, tmp_path, tiny_llama_dir, name):
    model, cfg = _trained(base, name)
    with torch.no_grad():
        want = all_logits(model, ids)
        assert not torch.allclose(want, all_logits(base, ids), atol=1e-4)
    out = core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)
    assert "deltatune_adapter.json" in {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left behind"
    core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)  # replaces it atomically

    fresh = copy.deepcopy(base)
    assert core.load_adapter(fresh, tmp_path / "adapter") == cfg
    with torch.no_grad():
        torch.testing.assert_close(all_logits(fresh, ids), want, rtol=0, atol=0)
    assert _greedy(fresh, ids.tolist()) == _greedy(model, ids.tolist())
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_cached_batched_generation_equals_plain_greedy(base, name):
    """KV-cached, left-padded batch decoding == one prompt at a time without a cache."""
    model, _ = _trained(base, name)
    prompts = [[5, 17, 99, 3, 41, 8], [7, 300, 12]]
    batched = _greedy(model, prompts)
    for prompt, tokens in zip(prompts, batched):
        ids = torch.tensor([prompt])
        plain = []
        with torch.no_grad():
            for _ in range(len(tokens)):
                plain.append(int(all_logits(model, ids)[0, -1].argmax()))
                ids = torch.cat([ids, torch.tensor([[plain[-1]]])], dim=1)
        assert tokens == plain


@pytest.mark.parametrize("name", sorted(METHODS))
def test_merge_or_refuse(base, ids, name):
    model, _ = _trained(base, name)
    with torch.no_grad():
        want = all_logits(model, ids)
        if not METHODS[name].mergeable:
            with pytest.raises(DeltatuneError, match="cannot be merged|no weight to fold"):
                core.merge_and_unload(model)
            with pytest.raises(DeltatuneError):
                core.merge(model)
            torch.testing.assert_close(all_logits(model, ids), want, rtol=0, atol=0)  # unchanged
            return
        core.merge(model)
        torch.testing.assert_close(all_logits(model, ids), want, rtol=0, atol=1e-5)
        core.unmerge(model)
        torch.testing.assert_close(all_logits(model, ids), want, rtol=0, atol=1e-5)
        plain = core.merge_and_unload(model)
        torch.testing.assert_close(all_logits(plain, ids), want, rtol=0, atol=1e-5)
    assert type(plain) is type(base)
    assert set(plain.state_dict()) == set(base.state_dict()), "merged model must have the base's keys"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_switched_off_computes_the_base(base, ids, name):
    model, _ = _trained(base, name)
    with torch.no_grad():
        want = all_logits(model, ids)
        if METHODS[name].trains_base_weights:  # trained in place: no base to switch back to
            with pytest.raises(DeltatuneError, match="no switched-off state"):
                with core.switched_off(model):
                    pass
            return
        with core.switched_off(model):
            torch.testing.assert_close(all_logits(model, ids), all_logits(base, ids), rtol=0, atol=0)
        torch.testing.assert_close(all_logits(model, ids), want, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_handle_swaps_in_and_out_over_a_shared_base(base, ids, tmp_path, tiny_llama_dir, name):
    model, cfg = _trained(base, name)
    other, _ = _trained(base, name, seed=3)
    core.save_adapter(model, cfg, tmp_path / "a", tiny_llama_dir)
    core.save_adapter(other, cfg, tmp_path / "b", tiny_llama_dir)
    shared = copy.deepcopy(base)
    snapshot = {n: (p.data_ptr(), p.detach().clone()) for n, p in shared.named_parameters()}
    with torch.no_grad():
        base_out = all_logits(shared, ids)
        want_a, want_b = all_logits(model, ids), all_logits(other, ids)
        assert not torch.allclose(want_a, want_b, atol=1e-4)
        handle_a = core.load_adapter_handle(shared, tmp_path / "a")
        handle_b = core.load_adapter_handle(shared, tmp_path / "b")
        for _ in range(2):  # alternate, as a server would per request batch
            with handle_a.active() as m:
                torch.testing.assert_close(all_logits(m, ids), want_a, rtol=0, atol=1e-6)
                with pytest.raises(RuntimeError):
                    with handle_b.active():
                        pass
            torch.testing.assert_close(all_logits(shared, ids), base_out, rtol=0, atol=0)
            with handle_b.active():
                torch.testing.assert_close(all_logits(shared, ids), want_b, rtol=0, atol=1e-6)
        with pytest.raises(ValueError), handle_a.active():
            raise ValueError("a failing request must still restore the base")
        torch.testing.assert_close(all_logits(shared, ids), base_out, rtol=0, atol=0)
    handle_b.unload()  # the server's unload: the handle refuses to activate afterwards
    with pytest.raises(RuntimeError, match="unloaded"), handle_b.active():
        pass
    after = {n: (p.data_ptr(), p) for n, p in shared.named_parameters()}
    assert set(after) == set(snapshot)
    for n, (ptr, value) in snapshot.items():
        assert after[n][0] == ptr and torch.equal(after[n][1], value), f"base {n} was replaced or changed"
