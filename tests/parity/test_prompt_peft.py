"""Our prompt tuning against HF `peft`'s PROMPT_TUNING (the reference).

With the same virtual-token embeddings (copied from a peft model initialised RANDOM into ours)
every comparison below holds within 1e-5 absolute (fp32):
  - logits on the caller's tokens — ours via `deltatune.forward.all_logits` and via plain
    `model(input_ids, attention_mask).logits` — equal peft's `logits[:, P:]` (peft also returns
    logits for its P virtual tokens), on a right-padded batch with an attention mask;
  - the gradient of the same loss (cross-entropy over the real, unpadded positions) w.r.t.
    the (P, H) prompt embeddings equals peft's;
  - greedy generation (`deltatune.generation.generate`, left-padded batch) equals peft's
    `generate` token for token;
  - adapter folders load in each other's loaders (ours in `peft.PeftModel.from_pretrained`, a
    plain peft folder in `core.load_adapter`) and compute the same logits, and the export
    check's fingerprint of the PeftModel (`run=plain_logits`) equals ours.
The trainable count is P * hidden, as peft's.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/parity/test_prompt_peft.py
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

peft = pytest.importorskip("peft")

from deltatune.export.verify import fingerprint, plain_logits  # noqa: E402
from deltatune.forward import all_logits  # noqa: E402
from deltatune.generation import SamplingParams, generate  # noqa: E402
from deltatune.methods import core  # noqa: E402
from deltatune.methods.prompt import PromptConfig  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)
P = 5  # virtual tokens
HIDDEN = 64  # tiny_llama_dir's hidden size


def _base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


def _peft(tiny_llama_dir, seed: int = 3):
    """peft prompt tuning (RANDOM init: N(0, 1) rows, drawn under `seed`) on a fresh base."""
    torch.manual_seed(seed)
    cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, prompt_tuning_init="RANDOM")
    return peft.get_peft_model(_base(tiny_llama_dir), cfg).eval()


def _peft_prompt(ref) -> torch.nn.Parameter:
    return ref.prompt_encoder["default"].embedding.weight  # (P, H)


def _ours_like(tiny_llama_dir, ref):
    """(model, cfg): our prompt tuning on a fresh base with `ref`'s virtual-token embeddings."""
    cfg = PromptConfig(num_virtual_tokens=P, init="random")
    model = _base(tiny_llama_dir)
    core.apply_method(model, cfg)
    with torch.no_grad():
        model.prompt_embeddings.weight.copy_(_peft_prompt(ref))
    return model, cfg


def _real_position_loss(logits: torch.Tensor, batch) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose target token is real (not padding)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    keep = mask[:, 1:].bool()  # (B, T-1)
    return F.cross_entropy(logits[:, :-1][keep].float(), ids[:, 1:][keep])


def test_same_embeddings_give_same_logits(tiny_llama_dir, batch):
    ref = _peft(tiny_llama_dir)
    ours, _ = _ours_like(tiny_llama_dir, ref)
    with torch.no_grad():
        want = ref(**batch).logits  # (B, P + T, V)
        assert want.shape[1] == P + batch["input_ids"].shape[1]
        via_forward = all_logits(ours, batch["input_ids"], batch["attention_mask"])
        via_call = ours(**batch).logits
        base = _base(tiny_llama_dir)(**batch).logits
    assert via_forward.shape == via_call.shape == batch["input_ids"].shape + (want.shape[-1],)
    torch.testing.assert_close(via_forward, want[:, P:], **TOL)
    torch.testing.assert_close(via_call, want[:, P:], **TOL)
    assert (via_call - base).abs().max() > 1e-3  # the virtual tokens do change the function


def test_same_loss_gives_same_gradient(tiny_llama_dir, batch):
    ref = _peft(tiny_llama_dir)
    ours, _ = _ours_like(tiny_llama_dir, ref)
    loss_ours = _real_position_loss(ours(**batch).logits, batch)
    loss_ref = _real_position_loss(ref(**batch).logits[:, P:], batch)
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    loss_ours.backward()
    loss_ref.backward()
    grad = ours.prompt_embeddings.weight.grad
    assert grad is not None and grad.shape == (P, HIDDEN) and grad.abs().sum() > 0
    torch.testing.assert_close(grad, _peft_prompt(ref).grad, **TOL)
    # only the prompt trains: the frozen base got no gradient
    assert all(p.grad is None for n, p in ours.named_parameters() if not n.startswith("prompt_embeddings"))


def test_trainable_count_is_p_times_hidden_and_peft_s(tiny_llama_dir):
    ref = _peft(tiny_llama_dir)
    ours, _ = _ours_like(tiny_llama_dir, ref)
    trainable, _ = core.count_parameters(ours)
    installed = core.installed_method(ours)[2]
    assert trainable == sum(p.numel() for p in installed.trainable()) == P * HIDDEN
    assert trainable == ref.get_nb_trainable_parameters()[0]


def test_greedy_generation_matches_peft_generate(tiny_llama_dir):
    """Ours: one left-padded batch of two prompts of different lengths. peft: each prompt
    alone (no padding), since peft drops position ids and so would count left padding as
    positions. We compare the new token ids of each prompt, token for token."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [tokenizer(t)["input_ids"] for t in ("Hello there, how are you doing today?", "Hi")]
    assert len(prompts[0]) != len(prompts[1])
    ref = _peft(tiny_llama_dir)
    ours, _ = _ours_like(tiny_llama_dir, ref)
    done = generate(ours, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    for prompt, completion in zip(prompts, done):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = ref.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                               max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
        want = out[0, len(prompt):].tolist()  # peft returns prompt + new ids (no virtual tokens)
        assert len(want) == 8 or want[-1] == tokenizer.eos_token_id
        assert completion.token_ids == want
    # and not trivially: the base model (prompt switched off) continues differently
    with core.switched_off(ours):
        plain = generate(ours, tokenizer, prompts, SamplingParams(max_new_tokens=8))
    assert [c.token_ids for c in plain] != [c.token_ids for c in done]


def test_cached_decoding_logits_match_peft(tiny_llama_dir):
    """The generation path below the token level: `next_token_logits` on a left-padded batch
    (prefill with positions counting real tokens, then cached steps) gives, for each row, the
    logits peft computes for that prompt alone with a full forward — within 1e-5. (A tiny
    random model's greedy tokens survive small errors such as unshifted positions, ~4e-3 in
    the logits; this catches them.)"""
    from deltatune.forward import next_token_logits

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [tokenizer(t)["input_ids"] for t in ("Hello there, how are you doing today?", "Hi")]
    steps = torch.tensor([[11, 12, 13], [21, 22, 23]])  # fixed continuation tokens per row
    ref = _peft(tiny_llama_dir)
    ours, _ = _ours_like(tiny_llama_dir, ref)
    width = max(map(len, prompts))
    ids = torch.full((2, width), tokenizer.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        got = [next_token_logits(ours, ids, mask, positions, None)]
        cache = got[0][1]
        for k in range(steps.shape[1]):
            mask = torch.cat([mask, mask.new_ones((2, 1))], dim=1)
            positions = positions[:, -1:] + 1
            got.append(next_token_logits(ours, steps[:, k:k + 1], mask, positions, cache))
            cache = got[-1][1]
        for row, prompt in enumerate(prompts):
            full = torch.tensor([prompt + steps[row].tolist()])
            want = ref(input_ids=full).logits[0, P:]  # (T + 3, V) on the caller's tokens
            for k, (logits, _) in enumerate(got):
                torch.testing.assert_close(logits[row], want[len(prompt) - 1 + k], **TOL)


@pytest.mark.parametrize("init", ["random", "vocab", "text"])
def test_our_adapter_folder_loads_in_peft(tiny_llama_dir, batch, tmp_path, init):
    """Whatever our init kind (peft's config then says RANDOM / SAMPLE_VOCAB / TEXT), peft
    loads the folder and computes the same logits."""
    ref = _peft(tiny_llama_dir)
    ours, _ = _ours_like(tiny_llama_dir, ref)
    cfg = PromptConfig(num_virtual_tokens=P, init=init, init_text="Answer briefly." if init == "text" else None)
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["peft_type"] == "PROMPT_TUNING" and meta["task_type"] == "CAUSAL_LM"
    assert meta["num_virtual_tokens"] == P and meta["token_dim"] == HIDDEN
    assert meta["prompt_tuning_init"] == {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}[init]
    loaded = peft.PeftModel.from_pretrained(_base(tiny_llama_dir), out).eval()
    torch.testing.assert_close(_peft_prompt(loaded), ours.prompt_embeddings.weight, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits[:, P:], ours(**batch).logits, **TOL)


def test_peft_adapter_folder_loads_in_ours(tiny_llama_dir, batch, tmp_path):
    ref = _peft(tiny_llama_dir, seed=7)
    ref.save_pretrained(tmp_path / "peft")  # a plain peft folder: no deltatune json
    assert not (tmp_path / "peft" / "deltatune_adapter.json").exists()
    fresh = _base(tiny_llama_dir)
    cfg = core.load_adapter(fresh, tmp_path / "peft")
    assert isinstance(cfg, PromptConfig) and cfg.num_virtual_tokens == P and cfg.init_kind == "random"
    torch.testing.assert_close(fresh.prompt_embeddings.weight, _peft_prompt(ref), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, ref(**batch).logits[:, P:], **TOL)
        torch.testing.assert_close(all_logits(fresh, batch["input_ids"], batch["attention_mask"]),
                                   ref(**batch).logits[:, P:], **TOL)


def test_export_fingerprint_of_the_peft_model_equals_ours(tiny_llama_dir, tmp_path):
    """What `deltatune export --format peft` checks: our adapted model's fingerprint against
    the saved folder loaded by peft and run with `plain_logits`."""
    ref = _peft(tiny_llama_dir)
    ours, cfg = _ours_like(tiny_llama_dir, ref)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompts = [tokenizer(t)["input_ids"] for t in ("What is the capital of France?", "List three colours.")]
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    loaded = peft.PeftModel.from_pretrained(_base(tiny_llama_dir), out)
    mine = fingerprint(ours, prompts, new_tokens=4)
    theirs = fingerprint(loaded, prompts, new_tokens=4, run=plain_logits)
    for a, b, prompt in zip(mine.logits, theirs.logits, prompts):
        assert a.shape == b.shape == (len(prompt), a.shape[-1])
        torch.testing.assert_close(a, b, **TOL)
    assert mine.greedy == theirs.greedy
