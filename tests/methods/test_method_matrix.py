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

from deltatune.config import ModelConfig, TrainConfig
from deltatune.data.batching import collate
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.generation import SamplingParams, generate
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.registry import METHODS
from deltatune.training.step import OptimiserStep

# One representative config per method (tests/method_examples.py); a new method adds its row there.
from method_examples import EXAMPLES  # noqa: E402

# Which parameter names must be trainable afterwards (all others frozen).
EXPECTED_TRAINABLE = {
    "full": lambda n: True,
    "freeze": lambda n: n.startswith("model.layers.1.") or n == "model.norm.weight",
    "lora": lambda n: re.search(r"\.lora_[AB]\.weight$", n) is not None,
    "lora_fa": lambda n: re.search(r"\.lora_B\.weight$", n) is not None,  # A frozen at its init
    "delta_lora": lambda n: re.search(r"\.lora_[AB]\.weight$", n) is not None,
    "dora": lambda n: re.search(r"\.(lora_[AB]\.weight|lora_magnitude_vector)$", n) is not None,
    "adalora": lambda n: re.search(r"\.lora_[AEB]$", n) is not None,
    "ia3": lambda n: re.search(r"\.(k_proj|v_proj|down_proj)\.ia3_l$", n) is not None,
    "prompt": lambda n: n == "prompt_embeddings.weight",
    "prefix": lambda n: n == "prefix_encoder.embedding.weight",
    "ptuning": lambda n: n == "prompt_embeddings.embedding.weight",
    "ptuning_v2": lambda n: n == "prefix_encoder.embedding.weight",
    "qlora": lambda n: re.search(r"\.lora_[AB]\.weight$", n) is not None,  # the 4-bit base stays frozen
    "adapter": lambda n: re.search(r"\.(self_attn\.o_proj|mlp\.down_proj)\.adapter\.(down|up)\.(weight|bias)$", n)
    is not None,
    "bitfit": lambda n: n.endswith("_proj.bitfit_bias"),
    "fishmask": lambda n: n == "fishmask.values",
    "said": lambda n: n in ("said.theta", "said.lambdas"),
}
# The tiny Llama: hidden 64, FFN 128, 2 layers, 4 heads of 16, 2 KV heads (k/v out 32).
H, FFN, LAYERS, KV = 64, 128, 2, 32
EXPECTED_COUNT = {  # the method's formula for the trainable element count (None: not checked here)
    "full": None,
    "freeze": None,
    "lora": LAYERS * 4 * ((H + H) + (H + KV) * 2 + (H + H)) + LAYERS * 4 * ((H + FFN) * 2 + (FFN + H)),
    # only each B (out x r): q, k, v, o; gate, up, down
    "lora_fa": LAYERS * 4 * (H + KV + KV + H) + LAYERS * 4 * (FFN + FFN + H),
    # LoRA's A and B (r x in + out x r) on q, k, v, o; gate, up, down: W moves without a gradient
    "delta_lora": LAYERS * 4 * ((H + H) + (H + KV) * 2 + (H + H)) + LAYERS * 4 * ((H + FFN) * 2 + (FFN + H)),
    # LoRA's count + one magnitude per output row of every target (q, k, v, o; gate, up, down)
    "dora": LAYERS * 4 * ((H + H) + (H + KV) * 2 + (H + H)) + LAYERS * 4 * ((H + FFN) * 2 + (FFN + H))
    + LAYERS * ((H + KV * 2 + H) + (FFN * 2 + H)),
    # init_r x (in + out + 1) per target (A: r x in, B: out x r, E: r): q, o; k, v; gate, up; down
    "adalora": LAYERS * 4 * ((H + H + 1) * 2 + (H + KV + 1) * 2 + (H + FFN + 1) * 2 + (FFN + H + 1)),
    "ia3": LAYERS * (KV + KV + FFN),
    "prompt": 5 * H,
    "prefix": 4 * LAYERS * 2 * KV,  # P x (every layer's key and value)
    "ptuning": 3 * H,  # the folded (P, H) table
    "ptuning_v2": 3 * LAYERS * 2 * KV,
    # LoRA's A and B (r x in + out x r) on q, k, v, o; gate, up, down, over the quantised layers
    "qlora": LAYERS * 4 * ((H + H) + (H + KV) * 2 + (H + H)) + LAYERS * 4 * ((H + FFN) * 2 + (FFN + H)),
    # houlsby: 2 adapters per block (after o_proj, after down_proj), b = H // 8; each 2*H*b + b + H
    "adapter": LAYERS * 2 * (2 * H * (H // 8) + H // 8 + H),
    # one bias per output of every Linear: q, k, v, o; gate, up, down
    "bitfit": LAYERS * ((H + KV + KV + H) + (FFN + FFN + H)),
    # k = int(keep_ratio x every Linear weight): q, o (H x H), k, v (KV x H), gate, up, down (FFN x H)
    "fishmask": int(0.05 * LAYERS * (H * H * 2 + KV * H * 2 + FFN * H * 3)),
    # d in all: d - m for the projection + one lambda per target tensor (m = LAYERS x 7)
    "said": (100 - LAYERS * 7) + LAYERS * 7,
}
# State-dict keys a merged model may add to the base's (all others must match exactly): BitFit
# keeps the biases it added to bias-free Linears.
MERGED_EXTRA_KEYS = {
    "bitfit": lambda k: k.endswith("_proj.bias"),
}
# Frozen tensors a method's after-step hook moves on purpose (the step test lets exactly these
# change too; they must be in the method's state): Delta-LoRA adds λ s Δ(B A) to each target's W.
MOVED_BY_HOOK = {
    "delta_lora": lambda n: n.endswith(".base_layer.weight"),
}


def test_every_method_is_in_the_matrix():
    assert set(EXAMPLES) == set(METHODS) == set(EXPECTED_TRAINABLE) == set(EXPECTED_COUNT)


@pytest.fixture(scope="module")
def plain_base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def loaded_bases():
    return {}  # method name -> its base loaded through its registry row's load_base


@pytest.fixture
def base(plain_base, loaded_bases, tiny_llama_dir, name):
    """The base `name` trains against: the plain tiny Llama, or what the method's own
    `load_base` makes of it (qlora: the decoder Linears quantised), loaded once."""
    load_base = METHODS[name].load_base
    if load_base is None:
        return plain_base
    if name not in loaded_bases:
        loaded_bases[name] = load_base(ModelConfig(name=str(tiny_llama_dir)), device="cpu", method_cfg=_cfg(name))[0].eval()
    return loaded_bases[name]


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
    moved = MOVED_BY_HOOK.get(name, lambda n: False)
    assert {n for n in flags if moved(n)} <= set(core.trainable_state_dict(model))
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == (flags[n] or moved(n)), f"{n}: trainable={flags[n]}, hook-moved={moved(n)}, changed={changed}"


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
def test_merge_or_refuse(base, plain_base, ids, name):
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
    extra = set(plain.state_dict()) - set(plain_base.state_dict())
    assert set(plain_base.state_dict()) <= set(plain.state_dict()), "merged model must have the base's keys"
    allowed = MERGED_EXTRA_KEYS.get(name, lambda k: False)
    assert all(allowed(k) for k in extra), f"merged model adds keys {sorted(extra)[:4]}"


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
