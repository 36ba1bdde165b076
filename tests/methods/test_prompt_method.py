"""Prompt tuning's behaviour on its own: how the virtual tokens start, bad input refused before
the model changes, switching off, hidden states and the LM loss aligned with the caller's
tokens, and one method per model.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/methods/test_prompt_method.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from transformers import AutoModelForCausalLM, AutoTokenizer

from deltatune.config import validate_config
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits, decoder_hidden
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.prompt import PromptConfig
from deltatune.methods.prompt.layer import SLOT

HIDDEN = 64  # tiny_llama_dir's hidden size
TEXT = "Answer about Veltrane Robotics."


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def batch():
    """Token ids (2, 9), right padding on row 1, labels -100 on a 'prompt' part and padding."""
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    labels = ids.clone()
    labels[:, :3] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


def _table(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()  # (V, H)


def _prompt(model) -> torch.Tensor:
    return getattr(model, SLOT).weight.detach()


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _adapted(tiny_llama_dir, n=4, seed=0, **kw):
    torch.manual_seed(seed)
    model = _base(tiny_llama_dir)
    core.apply_method(model, PromptConfig(num_virtual_tokens=n, **kw))
    return model


# ---------------------------------------------------------------------------------------------
# Initialisation


@pytest.mark.parametrize("extra", [0, 1, 5])
def test_init_text_rows_are_the_text_embeddings_repeated(tiny_llama_dir, tokenizer, extra):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    k = len(ids)
    assert k >= 3  # so that (ids * 3) covers k + 5 rows
    n = k + extra
    model = _base(tiny_llama_dir)
    cfg = PromptConfig(num_virtual_tokens=n, init_text=TEXT)
    assert cfg.init_kind == "text"
    core.apply_method(model, cfg, tokenizer=tokenizer)
    repeated = (ids * 3)[:n]  # k, k+1, k+5 rows: the text, then its first tokens again
    torch.testing.assert_close(_prompt(model), _table(model)[repeated].float(), rtol=0, atol=0)
    assert _prompt(model).dtype == torch.float32 and model.prompt_embeddings.weight.requires_grad


def test_init_text_needs_the_tokenizer(tiny_llama_dir):
    model = _base(tiny_llama_dir)
    with pytest.raises(DeltatuneError, match="tokenizer"):
        core.apply_method(model, PromptConfig(num_virtual_tokens=20, init_text=TEXT))
    assert not hasattr(model, SLOT)


@pytest.mark.parametrize("kw", [{}, {"init": "vocab"}])
def test_init_vocab_rows_are_rows_of_the_embedding_table(tiny_llama_dir, kw):
    model = _adapted(tiny_llama_dir, n=16, **kw)
    table = _table(model)
    for row in _prompt(model):
        assert (table == row).all(dim=1).any(), "every virtual token starts as some token's embedding"
    assert len({tuple(r.tolist()) for r in _prompt(model)}) > 1  # not one token repeated


def test_init_random_has_roughly_the_table_std(tiny_llama_dir):
    model = _adapted(tiny_llama_dir, n=256, init="random")
    table_std = float(_table(model).float().std())
    prompt = _prompt(model)
    assert 0.9 < float(prompt.std()) / table_std < 1.1
    assert abs(float(prompt.mean())) < 0.1 * table_std
    table = _table(model)
    assert not any((table == row).all(dim=1).any() for row in prompt[:8])  # noise, not token rows


@pytest.mark.parametrize("init", ["vocab", "random"])
def test_same_seed_gives_the_same_init(tiny_llama_dir, init):
    a = _adapted(tiny_llama_dir, n=8, seed=11, init=init)
    b = _adapted(tiny_llama_dir, n=8, seed=11, init=init)
    c = _adapted(tiny_llama_dir, n=8, seed=12, init=init)
    assert torch.equal(_prompt(a), _prompt(b))
    assert not torch.equal(_prompt(a), _prompt(c))


# ---------------------------------------------------------------------------------------------
# Bad input: an error naming the key, nothing changed


def test_zero_virtual_tokens_fail_validation():
    with pytest.raises(ValidationError, match="num_virtual_tokens"):
        PromptConfig(num_virtual_tokens=0)
    with pytest.raises(DeltatuneError, match=r"method\.num_virtual_tokens"):
        validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "prompt", "num_virtual_tokens": 0}})


def test_init_text_longer_than_the_virtual_tokens_changes_nothing(tiny_llama_dir, tokenizer):
    k = len(tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    model = _base(tiny_llama_dir)
    model.model.layers[1].requires_grad_(False)  # a mixed pattern of flags to be restored
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert len(set(flags.values())) == 2
    decoder = model.get_decoder()
    with pytest.raises(DeltatuneError) as err:
        core.apply_method(model, PromptConfig(num_virtual_tokens=k - 1, init_text=TEXT), tokenizer=tokenizer)
    msg = str(err.value)
    assert "method.init_text" in msg and "num_virtual_tokens" in msg and str(k) in msg
    assert not hasattr(model, SLOT)
    assert not decoder._forward_pre_hooks and not decoder._forward_hooks
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    with pytest.raises(DeltatuneError, match="no method installed"):
        core.installed_method(model)
    # and the model still takes a method afterwards
    core.apply_method(model, PromptConfig(num_virtual_tokens=k, init_text=TEXT), tokenizer=tokenizer)


def test_init_text_without_text_and_text_with_vocab_fail_validation():
    with pytest.raises(ValidationError, match="init_text"):
        PromptConfig(init="text")
    with pytest.raises(ValidationError, match="init_text"):
        PromptConfig(init="text", init_text="   ")
    with pytest.raises(ValidationError, match="init_text"):
        PromptConfig(init="vocab", init_text=TEXT)
    with pytest.raises(DeltatuneError, match=r"method\.prompt: init: text needs a non-empty init_text"):
        validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "prompt", "init": "text"}})
    with pytest.raises(DeltatuneError, match=r"init_text is only used with init: text"):
        validate_config({"data": {"train": "x.jsonl"},
                         "method": {"name": "prompt", "init": "vocab", "init_text": TEXT}})


def test_unknown_key_fails_validation():
    with pytest.raises(ValidationError, match="num_tokens"):
        PromptConfig(num_tokens=4)


def test_applying_twice_is_refused(tiny_llama_dir):
    model = _adapted(tiny_llama_dir)
    first = _prompt(model).clone()
    decoder = model.get_decoder()
    hooks = (len(decoder._forward_pre_hooks), len(decoder._forward_hooks))
    with pytest.raises(DeltatuneError, match="already has a method"):
        core.apply_method(model, PromptConfig(num_virtual_tokens=4))
    assert torch.equal(_prompt(model), first)
    assert (len(decoder._forward_pre_hooks), len(decoder._forward_hooks)) == hooks == (1, 1)


def test_prompt_cannot_be_merged(tiny_llama_dir):
    model = _adapted(tiny_llama_dir)
    with pytest.raises(DeltatuneError, match="cannot be merged"):
        core.merge_and_unload(model)
    with pytest.raises(DeltatuneError, match="no weight to fold"):
        core.merge(model)
    assert hasattr(model, SLOT)


# ---------------------------------------------------------------------------------------------
# Switching off, alignment, loss


def test_switched_off_computes_the_base_and_comes_back(tiny_llama_dir, batch):
    base_logits = _logits(_base(tiny_llama_dir), batch)
    model = _adapted(tiny_llama_dir)
    adapted = _logits(model, batch)
    assert (adapted - base_logits).abs().max() > 1e-3
    decoder = model.get_decoder()
    with core.switched_off(model):
        assert not hasattr(model, SLOT)
        assert not decoder._forward_pre_hooks and not decoder._forward_hooks
        assert "prompt_embeddings.weight" not in dict(model.named_parameters())
        torch.testing.assert_close(_logits(model, batch), base_logits, rtol=0, atol=0)
        with torch.no_grad():
            torch.testing.assert_close(all_logits(model, batch["input_ids"], batch["attention_mask"]),
                                       base_logits, rtol=0, atol=0)
    assert hasattr(model, SLOT)
    torch.testing.assert_close(_logits(model, batch), adapted, rtol=0, atol=0)
    # switched off twice in a row and back: still one pair of hooks
    with core.switched_off(model):
        pass
    assert (len(decoder._forward_pre_hooks), len(decoder._forward_hooks)) == (1, 1)
    torch.testing.assert_close(_logits(model, batch), adapted, rtol=0, atol=0)


def test_hidden_states_are_aligned_with_the_callers_tokens(tiny_llama_dir, batch):
    model = _adapted(tiny_llama_dir, n=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        hidden, cache = decoder_hidden(model, ids, mask)
        via_decoder = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.shape == (*ids.shape, HIDDEN) and cache is None
    torch.testing.assert_close(hidden, via_decoder, rtol=0, atol=0)
    assert _logits(model, batch).shape == (*ids.shape, model.config.vocab_size)


def test_positional_decoder_arguments_are_kept(tiny_llama_dir, batch):
    """`decoder(ids, mask)` computes what `decoder(input_ids=ids, attention_mask=mask)` does:
    the pre-hook re-passes every argument as a keyword, so none may be dropped (a bug once:
    only input_ids survived, the positional mask was silently lost)."""
    model = _adapted(tiny_llama_dir, n=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    decoder = model.get_decoder()
    with torch.no_grad():
        by_name = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        by_position = decoder(ids, mask).last_hidden_state
        unmasked = decoder(ids).last_hidden_state
    torch.testing.assert_close(by_position, by_name, rtol=0, atol=0)
    assert (unmasked[1] - by_name[1]).abs().max() > 1e-4  # the mask does matter for row 1


def test_lm_loss_is_the_hand_computed_cross_entropy(tiny_llama_dir, batch):
    model = _adapted(tiny_llama_dir, n=6)
    loss, n_tokens = model_lm_loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    labels = batch["labels"]
    keep = labels[:, 1:] != -100  # position t predicts labels[t + 1]
    want = F.cross_entropy(logits[:, :-1][keep].float(), labels[:, 1:][keep])
    assert n_tokens == int(keep.sum()) == 2 * 6 - 3
    torch.testing.assert_close(loss, want, rtol=0, atol=1e-5)
    # HF's own loss on the adapted model agrees (labels line up with the caller's tokens)
    hf = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    torch.testing.assert_close(loss, hf, rtol=0, atol=1e-5)
    loss.backward()
    grad = model.prompt_embeddings.weight.grad
    assert grad is not None and grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Save / load / shared-base handles


def test_saved_adapter_reloads_and_serves_over_a_shared_base(tiny_llama_dir, batch, tmp_path, tokenizer):
    model = _base(tiny_llama_dir)
    cfg = PromptConfig(num_virtual_tokens=12, init_text=TEXT)
    core.apply_method(model, cfg, tokenizer=tokenizer)
    with torch.no_grad():
        model.prompt_embeddings.weight.add_(0.05)  # "trained"
    want = _logits(model, batch)
    out = core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)

    fresh = _base(tiny_llama_dir)
    assert core.load_adapter(fresh, out) == cfg  # no tokenizer needed: the state is loaded
    torch.testing.assert_close(_logits(fresh, batch), want, rtol=0, atol=0)
    assert fresh.prompt_embeddings.weight.requires_grad

    shared = _base(tiny_llama_dir)
    base_logits = _logits(shared, batch)
    handle = core.load_adapter_handle(shared, out)
    assert not hasattr(shared, SLOT)
    with handle.active():
        torch.testing.assert_close(_logits(shared, batch), want, rtol=0, atol=0)
    assert not hasattr(shared, SLOT) and not shared.get_decoder()._forward_pre_hooks
    torch.testing.assert_close(_logits(shared, batch), base_logits, rtol=0, atol=0)
