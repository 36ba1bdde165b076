"""Our prefix tuning / P-tuning v2 against HF `peft`'s PREFIX_TUNING (the reference).

With the same starting weights (peft's prefix encoder copied into ours: the table, or the
embedding + MLP with `prefix_projection`) every comparison below holds within 1e-5 absolute
(fp32) on the tiny GQA Llama (2 layers, 2 KV heads of 16):
  - logits on a right-padded batch with an attention mask, ours via `all_logits` and via plain
    `model(...)`, equal peft's (peft returns no logits for the prefix either);
  - the gradient of the same loss w.r.t. every encoder tensor (table; embedding, W1, b1, W2, b2)
    equals peft's;
  - cached decoding (`next_token_logits` on a left-padded batch, prefill then three steps)
    gives each row the logits of peft's full forward over that prompt alone, and greedy
    generation equals a greedy loop over peft's forward token for token;
  - adapter folders load in each other's loaders with the same logits: ours (a reparameterised
    prefix folded to the table its MLP computes, which equals peft's own saved
    `prompt_embeddings`) in `peft.PeftModel.from_pretrained`, a peft-saved folder in
    `core.load_adapter` (`prefix_projection: true` -> `prefix`, false -> `ptuning_v2`);
  - the trainable counts equal peft's: P * layers * 2 * kv_width for the table,
    P * kv_width + the MLP for the projection.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/parity/test_prefix_peft.py
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

peft = pytest.importorskip("peft")

from deltatune.forward import all_logits, next_token_logits  # noqa: E402
from deltatune.generation import SamplingParams, generate  # noqa: E402
from deltatune.methods import core  # noqa: E402
from deltatune.methods.prefix import PrefixConfig  # noqa: E402
from deltatune.methods.ptuning_v2 import PTuningV2Config  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)
P = 4  # virtual tokens
LAYERS, KV = 2, 32  # tiny_llama_dir: 2 layers, 2 KV heads x 16 = the width of one layer's keys
VARIANTS = {  # name -> (our config, peft's prefix_projection)
    "ptuning_v2": (PTuningV2Config(num_virtual_tokens=P), False),
    "prefix-table": (PrefixConfig(num_virtual_tokens=P, prefix_projection=False), False),
    "prefix-mlp": (PrefixConfig(num_virtual_tokens=P), True),
}


def _base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


def _peft(tiny_llama_dir, projection: bool, seed: int = 3):
    torch.manual_seed(seed)
    cfg = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, prefix_projection=projection)
    return peft.get_peft_model(_base(tiny_llama_dir), cfg).eval()


def _encoder(ref):
    return ref.prompt_encoder["default"]


def _pair(tiny_llama_dir, variant: str, seed: int = 3):
    """(peft model, our model, our config) with the same prefix encoder weights."""
    cfg, projection = VARIANTS[variant]
    ref = _peft(tiny_llama_dir, projection, seed)
    ours = _base(tiny_llama_dir)
    core.apply_method(ours, cfg)
    ours.prefix_encoder.load_state_dict(_encoder(ref).state_dict())  # same names and shapes as peft's
    return ref, ours, cfg


def _real_position_loss(logits, batch):
    keep = batch["attention_mask"][:, 1:].bool()
    return F.cross_entropy(logits[:, :-1][keep].float(), batch["input_ids"][:, 1:][keep])


def _left_padded(prompts, pad_id):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids, mask


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_weights_give_same_logits(tiny_llama_dir, batch, variant):
    ref, ours, _ = _pair(tiny_llama_dir, variant)
    with torch.no_grad():
        want = ref(**batch).logits  # (B, T, V): peft's prefix lives in the cache only
        assert want.shape[:2] == batch["input_ids"].shape
        torch.testing.assert_close(all_logits(ours, batch["input_ids"], batch["attention_mask"]), want, **TOL)
        torch.testing.assert_close(ours(**batch).logits, want, **TOL)
        base = _base(tiny_llama_dir)(**batch).logits
    assert (want - base).abs().max() > 1e-3  # the prefix does change the function


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_loss_gives_same_gradients(tiny_llama_dir, batch, variant):
    ref, ours, _ = _pair(tiny_llama_dir, variant)
    loss_ours = _real_position_loss(ours(**batch).logits, batch)
    loss_ref = _real_position_loss(ref(**batch).logits, batch)
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    loss_ours.backward()
    loss_ref.backward()
    theirs = dict(_encoder(ref).named_parameters())
    mine = dict(ours.prefix_encoder.named_parameters())
    assert set(mine) == set(theirs) and len(mine) == (5 if VARIANTS[variant][1] else 1)
    for name, param in mine.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        torch.testing.assert_close(param.grad, theirs[name].grad, **TOL)
    assert all(p.grad is None for n, p in ours.named_parameters() if not n.startswith("prefix_encoder."))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_trainable_count_is_peft_s(tiny_llama_dir, variant):
    ref, ours, _ = _pair(tiny_llama_dir, variant)
    trainable, _ = core.count_parameters(ours)
    if VARIANTS[variant][1]:  # E (P, KV), KV -> KV (hidden: peft's default) -> LAYERS * 2 * KV
        assert trainable == P * KV + (KV * KV + KV) + (KV * LAYERS * 2 * KV + LAYERS * 2 * KV)
    else:
        assert trainable == P * LAYERS * 2 * KV
    assert trainable == ref.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("variant", ["ptuning_v2", "prefix-mlp"])
def test_cached_decoding_logits_match_peft(tiny_llama_dir, variant):
    """Left-padded prefill (positions counting real tokens) then three cached steps: each row
    gets the logits peft computes for its prompt alone with a full forward."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [tokenizer(t)["input_ids"] for t in ("Hello there, how are you doing today?", "Hi")]
    steps = torch.tensor([[11, 12, 13], [21, 22, 23]])
    ref, ours, _ = _pair(tiny_llama_dir, variant)
    ids, mask = _left_padded(prompts, tokenizer.pad_token_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        got = [next_token_logits(ours, ids, mask, positions, None)]
        assert got[0][1].get_seq_length() == P + ids.shape[1]  # the cache holds the prefix
        for k in range(steps.shape[1]):
            mask = torch.cat([mask, mask.new_ones((2, 1))], dim=1)
            positions = positions[:, -1:] + 1
            got.append(next_token_logits(ours, steps[:, k:k + 1], mask, positions, got[-1][1]))
        for row, prompt in enumerate(prompts):
            want = ref(input_ids=torch.tensor([prompt + steps[row].tolist()])).logits[0]
            for k, (logits, _) in enumerate(got):
                torch.testing.assert_close(logits[row], want[len(prompt) - 1 + k], **TOL)


@pytest.mark.parametrize("variant", ["ptuning_v2", "prefix-mlp"])
def test_greedy_generation_matches_peft_greedy(tiny_llama_dir, variant):
    """Our left-padded, cached `generate` against a greedy loop over peft's full forward.
    (Not peft's own `generate`: with transformers 5.2x it passes the prefix as
    `past_key_values` beside the `cache` generate made, and the model uses the empty `cache`
    — peft's prefix-tuning `generate` returns the base model's tokens.)"""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [tokenizer(t)["input_ids"] for t in ("Hello there, how are you doing today?", "Hi")]
    ref, ours, _ = _pair(tiny_llama_dir, variant)
    done = generate(ours, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    for prompt, completion in zip(prompts, done):
        ids, want = torch.tensor([prompt]), []
        with torch.no_grad():
            while len(want) < 8 and (not want or want[-1] != tokenizer.eos_token_id):
                want.append(int(ref(input_ids=ids).logits[0, -1].argmax()))
                ids = torch.cat([ids, torch.tensor([[want[-1]]])], dim=1)
        assert completion.token_ids == want
    with core.switched_off(ours):
        plain = generate(ours, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    assert [c.token_ids for c in plain] != [c.token_ids for c in done]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_our_adapter_folder_loads_in_peft(tiny_llama_dir, batch, tmp_path, variant):
    ref, ours, cfg = _pair(tiny_llama_dir, variant)
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["peft_type"] == "PREFIX_TUNING" and meta["prefix_projection"] is False
    assert (meta["token_dim"], meta["num_attention_heads"], meta["num_layers"]) == (KV, 2, LAYERS)
    saved = json.loads((out / "deltatune_adapter.json").read_text())["method"]
    assert saved["name"] == cfg.name and saved.get("prefix_projection", False) is False  # folded
    loaded = peft.PeftModel.from_pretrained(_base(tiny_llama_dir), out).eval()
    # the folded table is what peft itself saves for this prefix (its MLP's output, for projection)
    torch.testing.assert_close(_encoder(loaded).embedding.weight, ref.get_prompt_embedding_to_save("default"), **TOL)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, ours(**batch).logits, **TOL)


@pytest.mark.parametrize("projection, method", [(True, "prefix"), (False, "ptuning_v2")])
def test_peft_adapter_folder_loads_in_ours(tiny_llama_dir, batch, tmp_path, projection, method):
    ref = _peft(tiny_llama_dir, projection, seed=7)
    ref.save_pretrained(tmp_path / "peft")  # a plain peft folder: only `prompt_embeddings`
    assert not (tmp_path / "peft" / "deltatune_adapter.json").exists()
    fresh = _base(tiny_llama_dir)
    cfg = core.load_adapter(fresh, tmp_path / "peft")
    assert cfg.name == method and cfg.num_virtual_tokens == P
    assert getattr(cfg, "prefix_projection", False) is False  # peft saved the table only
    with torch.no_grad():
        want = ref(**batch).logits
        torch.testing.assert_close(fresh(**batch).logits, want, **TOL)
        torch.testing.assert_close(all_logits(fresh, batch["input_ids"], batch["attention_mask"]), want, **TOL)
