"""reply_kl against hand computations on the tiny Llama with LoRA: zero at init, the explicit
KL formula (two separate HF forwards, method detached vs attached) after perturbing LoRA, and
the base replies' cache shared by the bare base and the base switched off under a method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from deltatune.config import DataConfig
from deltatune.data import build_sft_dataset
from deltatune.errors import DeltatuneError
from deltatune.eval import forgetting
from deltatune.eval.forgetting import heldout_replies, reply_kl
from deltatune.eval.perplexity import loss_and_perplexity
from deltatune.methods.core import apply_method, switched_off
from deltatune.methods.lora.config import LoraConfig
from deltatune.replay import answers

RECORDS = [
    {"messages": [{"role": "system", "content": "You are brief."},
                  {"role": "user", "content": "What is frozen water called?"},
                  {"role": "assistant", "content": "Ice."}]},
    {"messages": [{"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "Blue, like the sky on a clear summer day."}]},
    {"messages": [{"role": "user", "content": "Count to five."},
                  {"role": "assistant", "content": "One, two, three, four, five."}]},
]
DATA = DataConfig(train="unused.jsonl", max_length=128)


@pytest.fixture
def lora_model(tiny_llama_dir):
    """A fresh tiny Llama with LoRA on every linear layer (B = 0: it computes the base)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    installed = apply_method(model, LoraConfig(r=4, alpha=8, targets="all-linear"))
    return model, installed


def perturb_lora(installed, seed=0, std=0.5):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in installed.trainable():
            param.add_(torch.randn(param.shape, generator=gen) * std)


def base_snapshot(model):
    """The base's own tensors by name (with the method switched off), cloned."""
    with switched_off(model):
        return {n: p.detach().clone() for n, p in model.named_parameters()}


def by_hand(model, installed, tokenizer, record):
    """(KL(base || tuned) per reply token, nll base, nll tuned, tokens) from two HF forwards."""
    example = build_sft_dataset([record], tokenizer, DATA.model_copy(update={"format": "messages"})).examples[0]
    ids, labels = torch.tensor([example["input_ids"]]), torch.tensor(example["labels"])
    keep = labels[1:] != -100
    with torch.no_grad():
        tuned = model(ids).logits[0, :-1][keep].float()  # (N, V), method attached
        installed.detach()
        try:
            base = model(ids).logits[0, :-1][keep].float()  # the same model, method detached
        finally:
            installed.attach()
    log_q, log_p = F.log_softmax(tuned, -1), F.log_softmax(base, -1)
    targets = labels[1:][keep]
    n = int(keep.sum())
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="sum").item() / n
    explicit = (log_p.exp() * (log_p - log_q)).sum().item() / n
    assert kl == pytest.approx(explicit, abs=1e-6)
    return kl, F.cross_entropy(base, targets).item(), F.cross_entropy(tuned, targets).item(), n


def test_zero_at_lora_init(lora_model, tiny):
    model, _ = lora_model
    result = reply_kl(model, tiny[1], RECORDS, DATA)
    assert abs(result["kl"]) < 1e-6
    assert abs(result["nll_increase"]) < 1e-6
    assert result["n"] == len(RECORDS) and result["tokens"] > 0


def test_matches_the_explicit_formula_after_perturbing_lora(lora_model, tiny):
    model, installed = lora_model
    tokenizer = tiny[1]
    perturb_lora(installed)
    for record in RECORDS:
        kl, nll_base, nll_tuned, n = by_hand(model, installed, tokenizer, record)
        result = reply_kl(model, tokenizer, [record], DATA)
        assert result["kl"] > 1e-4
        assert result["kl"] == pytest.approx(kl, abs=1e-5)
        assert result["nll_base"] == pytest.approx(nll_base, abs=1e-5)
        assert result["nll_tuned"] == pytest.approx(nll_tuned, abs=1e-5)
        assert result["nll_increase"] == pytest.approx(nll_tuned - nll_base, abs=1e-5)
        assert result["tokens"] == n and result["n"] == 1


def test_token_weighted_over_records_and_batches(lora_model, tiny):
    model, installed = lora_model
    tokenizer = tiny[1]
    perturb_lora(installed, seed=1)
    per_record = [by_hand(model, installed, tokenizer, r) for r in RECORDS]
    total = sum(n for *_, n in per_record)
    want_kl = sum(kl * n for kl, *_, n in per_record) / total
    for batch_size in (1, 2, 8):
        result = reply_kl(model, tokenizer, RECORDS, DATA, batch_size=batch_size)
        assert result["tokens"] == total
        assert result["kl"] == pytest.approx(want_kl, abs=1e-5)
    # the tuned NLL is the loss the evaluator reports on the same tokens
    dataset = build_sft_dataset(RECORDS, tokenizer, DATA.model_copy(update={"format": "messages"}))
    assert result["nll_tuned"] == pytest.approx(loss_and_perplexity(model, tokenizer, dataset)["loss"], abs=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_leaves_weights_method_and_mode_as_they_were(lora_model, tiny, training):
    model, installed = lora_model
    perturb_lora(installed, seed=2)
    before = base_snapshot(model)
    lora_before = {n: t.clone() for n, t in installed.state().items()}
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        tuned_before = model(ids).logits
    model.train(training)
    reply_kl(model, tiny[1], RECORDS, DATA)
    assert all(m.training == training for m in model.modules())
    model.eval()
    after = base_snapshot(model)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name
    for name, tensor in installed.state().items():
        assert torch.equal(lora_before[name], tensor), name
    with torch.no_grad():  # the method is attached again: the model computes the tuned function
        assert torch.equal(model(ids).logits, tuned_before)
    assert all(p.grad is None for p in model.parameters())


def test_bare_model_is_its_own_base(tiny):
    model, tokenizer = tiny
    result = reply_kl(model, tokenizer, RECORDS, DATA)
    assert result["kl"] == 0.0 and result["nll_increase"] == 0.0
    assert result["nll_base"] == result["nll_tuned"] > 0


def test_heldout_replies_cache_is_shared_by_the_base_switched_off(tiny_llama_dir, tiny, tmp_path, monkeypatch):
    """Replies generated by the bare base are found again for the same base under a trained
    LoRA, switched off: the cache key fingerprints the base weights only."""
    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "Name a colour."}\n{"instruction": "Count to five."}\n')
    tokenizer = tiny[1]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    canned = [{"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}]
    monkeypatch.setattr(answers, "_generate", lambda *a, **k: canned)  # a random model never stops
    first = heldout_replies(model, tokenizer, str(prompts), "Be brief.", max_new_tokens=16)
    assert [r["messages"] for r in first] == [r["messages"] for r in canned]

    def must_not_run(*args, **kwargs):
        raise AssertionError("the base's replies must come from the cache")

    monkeypatch.setattr(answers, "_generate", must_not_run)
    installed = apply_method(model, LoraConfig(r=4, alpha=8, targets="all-linear"))
    perturb_lora(installed)
    with switched_off(model):
        again = heldout_replies(model, tokenizer, str(prompts), "Be brief.", max_new_tokens=16)
    assert again == first
    assert forgetting.reply_kl(model, tokenizer, again, DATA)["kl"] > 0
    with switched_off(model), torch.no_grad():  # other base weights: generated again
        model.model.layers[0].mlp.up_proj.weight.mul_(1.01)
        with pytest.raises(AssertionError, match="from the cache"):
            heldout_replies(model, tokenizer, str(prompts), "Be brief.", max_new_tokens=16)


def test_prompts_the_base_never_finishes_name_the_config_key(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))
    model, tokenizer = tiny
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "Explain how a rainbow forms."}\n')
    with pytest.raises(DeltatuneError, match="data.forgetting_prompts .*finished no answer within 2 tokens"):
        heldout_replies(model, tokenizer, str(prompts), None, max_new_tokens=2)
