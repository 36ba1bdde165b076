"""Every method in METHODS through the same checks: only its parameters train, save/load
round-trips exactly, merge_and_unload keeps outputs, and an AdapterHandle swaps in and out
over a shared base without changing it.

    .venv/bin/pytest tests/methods/test_method_matrix.py
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.methods import core
from deltatune.methods.registry import METHODS

# One representative config per method; a new method must add its row here.
EXAMPLES = {
    "full": {"name": "full"},
    "freeze": {"name": "freeze", "train_last_n_blocks": 1, "train_norm": True},
    "lora": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
}
# Which parameter names must be trainable afterwards (all others frozen).
EXPECTED_TRAINABLE = {
    "full": lambda n: True,
    "freeze": lambda n: n.startswith("model.layers.1.") or n == "model.norm.weight",
    "lora": lambda n: re.search(r"\.lora_[AB]\.weight$", n) is not None,
}


def test_every_method_is_in_the_matrix():
    assert set(EXAMPLES) == set(METHODS) == set(EXPECTED_TRAINABLE)


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


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
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model, cfg


@pytest.mark.parametrize("name", sorted(METHODS))
def test_only_the_methods_parameters_train(base, ids, name):
    model = copy.deepcopy(base)
    core.apply_method(model, _cfg(name))
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert any(flags.values())
    wrong = [n for n, flag in flags.items() if flag != EXPECTED_TRAINABLE[name](n)]
    assert not wrong, f"unexpected requires_grad on {wrong[:5]}"
    trainable, total = core.count_parameters(model)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert set(core.trainable_state_dict(model)) == {n for n, f in flags.items() if f}
    # A training step moves exactly the trainable tensors.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        if not flags[n]:
            assert not changed and p.grad is None, f"frozen {n} changed"
    if name == "lora":  # LoRA must reach the base W only through A and B: all base weights intact
        assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if "base_layer" in n)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_save_load_round_trip(base, ids, tmp_path, tiny_llama_dir, name):
    model, cfg = _trained(base, name)
    with torch.no_grad():
        want = model(ids).logits
        assert not torch.allclose(want, base(ids).logits, atol=1e-4)
    out = core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)
    files = {p.name for p in out.iterdir()}
    weights = "adapter_model.safetensors" if METHODS[name].kind == "wrap" else "model.safetensors"
    assert {"deltatune_adapter.json", weights} <= files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left behind"
    # Saving again over it replaces it (atomic rename), still loadable.
    core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)

    fresh = copy.deepcopy(base)
    loaded_cfg = core.load_adapter(fresh, tmp_path / "adapter")
    assert loaded_cfg == cfg
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, want, rtol=0, atol=0)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == set(core.trainable_state_dict(model))


@pytest.mark.parametrize("name", [n for n, s in METHODS.items() if s.mergeable])
def test_merge_and_unload_keeps_outputs(base, ids, name):
    model, _ = _trained(base, name)
    with torch.no_grad():
        want = model(ids).logits
        core.merge(model)
        torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=1e-5)
        core.unmerge(model)
        torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=1e-5)
        plain = core.merge_and_unload(model)
        torch.testing.assert_close(plain(ids).logits, want, rtol=0, atol=1e-5)
    assert type(plain) is type(base)
    assert set(plain.state_dict()) == set(base.state_dict()), "merged model must have the base's keys"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_handle_swaps_in_and_out_over_a_shared_base(base, ids, tmp_path, tiny_llama_dir, name):
    model, cfg = _trained(base, name)
    other, _ = _trained(base, name, seed=3)
    core.save_adapter(model, cfg, tmp_path / "a", tiny_llama_dir)
    core.save_adapter(other, cfg, tmp_path / "b", tiny_llama_dir)
    shared = copy.deepcopy(base)
    snapshot = {n: (p.data_ptr(), p.detach().clone()) for n, p in shared.named_parameters()}
    with torch.no_grad():
        base_out = shared(ids).logits
        want_a, want_b = model(ids).logits, other(ids).logits
        assert not torch.allclose(want_a, want_b, atol=1e-4)
        handle_a = core.load_adapter_handle(shared, tmp_path / "a")
        handle_b = core.load_adapter_handle(shared, tmp_path / "b")
        for _ in range(2):  # alternate, as a server would per request batch
            with handle_a.active() as m:
                torch.testing.assert_close(m(ids).logits, want_a, rtol=0, atol=1e-6)
                with pytest.raises(RuntimeError):
                    with handle_b.active():
                        pass
            torch.testing.assert_close(shared(ids).logits, base_out, rtol=0, atol=0)
            with handle_b.active():
                torch.testing.assert_close(shared(ids).logits, want_b, rtol=0, atol=1e-6)
        with pytest.raises(ValueError), handle_a.active():
            raise ValueError("a failing request must still restore the base")
        torch.testing.assert_close(shared(ids).logits, base_out, rtol=0, atol=0)
    handle_b.unload()  # the server's unload: the handle refuses to activate afterwards
    with pytest.raises(RuntimeError, match="unloaded"), handle_b.active():
        pass
    after = {n: (p.data_ptr(), p) for n, p in shared.named_parameters()}
    assert set(after) == set(snapshot)
    for n, (ptr, value) in snapshot.items():
        assert after[n][0] == ptr and torch.equal(after[n][1], value), f"base {n} was replaced or changed"
