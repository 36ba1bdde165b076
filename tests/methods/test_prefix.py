"""Prefix tuning, P-tuning v2 and P-tuning on their own: the reparameterised forms (which the
shared matrix cannot take as they are, since their adapter folder holds the folded table)
through the matrix's checks, the mechanics of the KV prefix, and bad input refused.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/methods/test_prefix.py
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig, load_config
from deltatune.data.batching import collate
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits, decoder_hidden
from deltatune.generation import SamplingParams, generate
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.prefix import PrefixConfig
from deltatune.methods.ptuning import PTuningConfig
from deltatune.methods.ptuning_v2 import PTuningV2Config
from deltatune.training.step import OptimiserStep

H, LAYERS, KV = 64, 2, 32  # the tiny Llama: hidden 64, 2 layers, 2 KV heads x 16
FLAT = LAYERS * 2 * KV  # one virtual token's keys and values, every layer
LSTM = 2 * (4 * H * H + 4 * H * H + 8 * H) + 2 * (4 * H * 2 * H + 4 * H * H + 8 * H)  # 2 bi-LSTM layers, hidden H
# the reparameterised configs: (config, trainable count written out, the folded config it saves as, table shape)
REPARAMETERISED = {
    "prefix-mlp": (PrefixConfig(num_virtual_tokens=4, encoder_hidden_size=48),
                   4 * KV + (KV * 48 + 48) + (48 * FLAT + FLAT),
                   PrefixConfig(num_virtual_tokens=4, prefix_projection=False), (4, FLAT)),
    "ptuning-lstm": (PTuningConfig(num_virtual_tokens=3),
                     3 * H + LSTM + (2 * H * 2 * H + 2 * H) + (2 * H * H + H),
                     PTuningConfig(num_virtual_tokens=3, encoder="none"), (3, H)),
    "ptuning-mlp": (PTuningConfig(num_virtual_tokens=3, encoder="mlp", encoder_hidden_size=32),
                    3 * H + (H * 32 + 32) + (32 * 32 + 32) + (32 * H + H),
                    PTuningConfig(num_virtual_tokens=3, encoder="none"), (3, H)),
}


class _Tok:
    pad_token_id, eos_token_id = 0, None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


def _installed(base, cfg, seed=2):
    model = copy.deepcopy(base)
    core.apply_method(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in core.installed_method(model)[2].trainable():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _greedy(model, prompts, n=5):
    return [c.token_ids for c in generate(model, _Tok(), prompts, SamplingParams(max_new_tokens=n))]


@pytest.mark.parametrize("variant", sorted(REPARAMETERISED))
def test_training_step_moves_exactly_the_encoder(base, variant):
    cfg, count, _, _ = REPARAMETERISED[variant]
    model = copy.deepcopy(base)
    installed = core.apply_method(model, cfg)
    assert core.count_parameters(model)[0] == sum(p.numel() for p in installed.trainable()) == count
    gen = torch.Generator().manual_seed(4)
    batch = collate([{"input_ids": (t := torch.randint(5, 1000, (n,), generator=gen).tolist()),
                      "labels": [-100] * 2 + t[2:]} for n in (8, 5)], pad_id=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=2, loss_fn=model_lm_loss)
    for step in (1, 2):
        stepper.step([batch], step)
    for n, p in model.named_parameters():
        assert (not torch.equal(before[n], p.detach())) == p.requires_grad, n


@pytest.mark.parametrize("variant", sorted(REPARAMETERISED))
def test_saved_folded_and_loads_back_identical(base, ids, tmp_path, tiny_llama_dir, variant):
    cfg, _, folded, shape = REPARAMETERISED[variant]
    model = _installed(base, cfg)
    with torch.no_grad():
        want = all_logits(model, ids)
    out = core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)
    tensors = load_file(out / "adapter_model.safetensors")
    assert list(tensors) == ["prompt_embeddings"] and tuple(tensors["prompt_embeddings"].shape) == shape
    fresh = copy.deepcopy(base)
    assert core.load_adapter(fresh, out) == folded
    with torch.no_grad():
        torch.testing.assert_close(all_logits(fresh, ids), want, rtol=0, atol=0)  # the fold is exact
    assert _greedy(fresh, ids.tolist()) == _greedy(model, ids.tolist())
    assert core.installed_method(model)[1] == cfg  # the trained model keeps its encoder


@pytest.mark.parametrize("cfg", [REPARAMETERISED["prefix-mlp"][0], REPARAMETERISED["ptuning-lstm"][0],
                                 PTuningV2Config(num_virtual_tokens=3)], ids=["prefix", "ptuning", "ptuning_v2"])
def test_left_padded_cached_generation_equals_plain_greedy(base, cfg):
    model = _installed(base, cfg)
    prompts = [[5, 17, 99, 3, 41, 8], [7, 300, 12]]
    for prompt, tokens in zip(prompts, _greedy(model, prompts)):
        ids, plain = torch.tensor([prompt]), []
        with torch.no_grad():
            for _ in tokens:
                plain.append(int(all_logits(model, ids)[0, -1].argmax()))
                ids = torch.cat([ids, torch.tensor([[plain[-1]]])], dim=1)
        assert tokens == plain


@pytest.mark.parametrize("cfg", [REPARAMETERISED["prefix-mlp"][0], REPARAMETERISED["ptuning-mlp"][0],
                                 PTuningV2Config(num_virtual_tokens=3)], ids=["prefix", "ptuning", "ptuning_v2"])
def test_refuses_merge_and_switches_off_to_the_base(base, ids, cfg):
    model = _installed(base, cfg)
    with torch.no_grad():
        want = all_logits(model, ids)
        for merge in (core.merge, core.merge_and_unload):
            with pytest.raises(DeltatuneError, match="cannot be merged"):
                merge(model)
        with core.switched_off(model):
            torch.testing.assert_close(all_logits(model, ids), all_logits(base, ids), rtol=0, atol=0)
        torch.testing.assert_close(all_logits(model, ids), want, rtol=0, atol=0)


def test_prefix_mechanics_mask_positions_and_cache(base, ids):
    """No mask == an all-ones mask; explicit positions 0..T-1 == none (both shifted by P, as
    peft); the prefix lives in the cache only: hidden states keep the caller's length, a
    `use_cache=False` call hands back no cache, and the cache after prefill holds P + T."""
    model = _installed(base, PTuningV2Config(num_virtual_tokens=3))
    positions = torch.arange(ids.shape[1])[None].expand_as(ids)
    with torch.no_grad():
        plain = all_logits(model, ids)
        torch.testing.assert_close(all_logits(model, ids, torch.ones_like(ids)), plain, rtol=0, atol=1e-6)
        hidden, cache = decoder_hidden(model, ids, torch.ones_like(ids), positions, use_cache=True)
        assert hidden.shape[:2] == ids.shape and cache.get_seq_length() == 3 + ids.shape[1]
        torch.testing.assert_close(model.lm_head(hidden).float(), plain, rtol=0, atol=1e-6)
        out = model.get_decoder()(input_ids=ids, use_cache=False)
        assert getattr(out, "cache", None) is None and getattr(out, "past_key_values", None) is None


def test_hot_swap_over_a_shared_base_never_writes_it(base, ids, tmp_path, tiny_llama_dir):
    model = _installed(base, REPARAMETERISED["prefix-mlp"][0])
    core.save_adapter(model, REPARAMETERISED["prefix-mlp"][0], tmp_path / "a", tiny_llama_dir)
    shared = copy.deepcopy(base)
    snapshot = {n: p.detach().clone() for n, p in shared.named_parameters()}
    with torch.no_grad():
        base_out = all_logits(shared, ids)
        handle = core.load_adapter_handle(shared, tmp_path / "a")
        with handle.active() as m:
            torch.testing.assert_close(all_logits(m, ids), all_logits(model, ids), rtol=0, atol=1e-6)
        torch.testing.assert_close(all_logits(shared, ids), base_out, rtol=0, atol=0)
    assert all(torch.equal(p, snapshot[n]) for n, p in shared.named_parameters())


def test_bad_input_is_refused_before_the_model_changes(base, ids):
    with pytest.raises(ValidationError, match="prefix_projection"):
        PrefixConfig(prefix_projection=False, encoder_hidden_size=32)
    with pytest.raises(ValidationError, match="encoder: lstm"):
        PTuningConfig(encoder="mlp", encoder_num_layers=3)
    with pytest.raises(ValidationError, match="encoder_hidden_size"):
        PTuningConfig(encoder="none", encoder_hidden_size=8)
    with pytest.raises(ValidationError):
        PTuningV2Config(prefix_projection=True)  # not a P-tuning v2 key
    model = _installed(base, PTuningV2Config(num_virtual_tokens=2))
    with pytest.raises(DeltatuneError, match="2-D"):
        model(input_ids=ids, attention_mask=torch.ones(2, 1, 9, 9))
    model.get_decoder().gradient_checkpointing = True
    model.train()
    with pytest.raises(DeltatuneError, match="gradient checkpointing"):
        model(input_ids=ids)
    with pytest.raises(DeltatuneError, match="already has a method"):
        core.apply_method(model, PrefixConfig())
    with pytest.raises(DeltatuneError, match="decoder model"):
        core.apply_method(torch.nn.Linear(2, 2), PTuningConfig())


# the learning rates measured best on SmolLM2 (README, "Measured on this machine"): a prefix
# started from init_text needs only 1e-3, a P-tuning v2 one 1e-2, the LSTM encoder 1e-2
@pytest.mark.parametrize("name, lr, from_text", [("prefix", 1e-3, True), ("ptuning", 1e-2, False),
                                                 ("ptuning_v2", 1e-2, True)])
def test_ready_config_loads(name, lr, from_text):
    path = Path(__file__).parents[2] / "configs" / "smollm2" / f"sft_{name}.yaml"
    cfg = load_config(path)
    assert cfg.method.name == name and cfg.train.lr == pytest.approx(lr)
    assert bool(getattr(cfg.method, "init_text", None)) is from_text


# -- init_text: the prefix starts as the base model's own keys/values of a real text
INIT_TEXT = "Answer questions about Veltrane."


@pytest.mark.parametrize("cfg", [PTuningV2Config(num_virtual_tokens=9, init_text=INIT_TEXT),
                                 PrefixConfig(num_virtual_tokens=9, prefix_projection=False, init_text=INIT_TEXT),
                                 PrefixConfig(num_virtual_tokens=9, encoder_hidden_size=24, init_text=INIT_TEXT)],
                         ids=["ptuning_v2", "prefix-table", "prefix-mlp"])
def test_init_text_equals_writing_the_text_before_every_prompt(base, tiny_llama_dir, cfg):
    """With init_text the tuned model starts exactly as the base reading the (repeated) text
    first: same logits on the prompt's tokens (Li & Liang's real-word initialisation)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = tokenizer(INIT_TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) < 9  # repeated to fill the 9 virtual tokens
    filled = (ids * 9)[:9]
    prompt = torch.tensor([[5, 17, 230, 41, 8]])
    with torch.no_grad():
        reference = base(input_ids=torch.cat([torch.tensor([filled]), prompt], dim=1)).logits[:, 9:]
    model = copy.deepcopy(base)
    core.apply_method(model, cfg, tokenizer=tokenizer)
    with torch.no_grad():
        tuned = model(input_ids=prompt).logits
    torch.testing.assert_close(tuned, reference, atol=1e-4, rtol=0)


def test_init_text_is_checked(base, tiny_llama_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    with pytest.raises(DeltatuneError, match="init_text is .* tokens long"):
        core.apply_method(copy.deepcopy(base), PTuningV2Config(num_virtual_tokens=2, init_text=INIT_TEXT),
                          tokenizer=tokenizer)
    with pytest.raises(DeltatuneError, match="encoder_hidden_size >= num_virtual_tokens"):
        core.apply_method(copy.deepcopy(base), PrefixConfig(num_virtual_tokens=9, encoder_hidden_size=4,
                                                            init_text=INIT_TEXT), tokenizer=tokenizer)
    with pytest.raises(DeltatuneError, match="needs the tokenizer"):
        core.apply_method(copy.deepcopy(base), PTuningV2Config(num_virtual_tokens=9, init_text=INIT_TEXT))
