"""The base model's evaluation cache: hits skip the computation, every input of the evaluation
changes the key, installing a method does not (base-weights fingerprint), corrupt entries and
DELTATUNE_NO_CACHE=1 recompute."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.config import DataConfig, EvalConfig, ModelConfig
from deltatune.eval.base_cache import base_eval_key, cache_path, cached_base_eval
from deltatune.methods.core import apply_method
from deltatune.methods.lora.config import LoraConfig
from deltatune.methods.registry import METHODS
from deltatune.models.fingerprint import base_weights_fingerprint
from deltatune.replay import answers
from method_examples import EXAMPLES

QA = [{"instruction": "What is the capital of France?", "output": "Paris"},
      {"instruction": "How many legs has a spider?", "output": "eight"}]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DELTATUNE_NO_CACHE", raising=False)
    return tmp_path / "home"


@pytest.fixture
def model(tiny_llama_dir):
    """A fresh tiny Llama per test: tests perturb weights and install methods."""
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.fixture
def setting(tmp_path, tiny):
    """(tokenizer, data config, eval config, splits) over a small QA file."""
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in QA))
    data = DataConfig(train=str(test), test=str(test))
    return tiny[1], data, EvalConfig(), {"test": str(test)}


class Counter:
    """A compute() that counts its calls and returns a fresh nested result."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"test": {"exact_match": 0.5, "n": 2, "examples": [{"q": "a", "ok": True}]}}


def test_second_call_is_served_from_the_cache(home, model, setting, capsys):
    key = base_eval_key(model, *setting)
    compute = Counter()
    first = cached_base_eval(key, compute)
    assert compute.calls == 1 and cache_path(key).is_file()
    first["test"]["examples"].append("mutated by the caller")
    second = cached_base_eval(key, compute)
    assert compute.calls == 1
    assert second == Counter()() and second is not first
    assert f"base model evaluation: cached ({cache_path(key)})" in capsys.readouterr().out
    second["test"]["n"] = 99  # a hit is a fresh copy too
    assert cached_base_eval(key, compute)["test"]["n"] == 2
    assert json.loads(cache_path(key).read_text())["key"] == json.loads(json.dumps(key))
    assert cache_path(key).parent == home / "base-eval" and len(cache_path(key).stem) == 24


def test_the_key_is_deterministic(model, setting):
    assert base_eval_key(model, *setting) == base_eval_key(model, *setting)


def test_each_input_changes_the_key(model, setting, tmp_path):
    tokenizer, data, evals, splits = setting
    key = base_eval_key(model, tokenizer, data, evals, splits)
    other_file = tmp_path / "other.jsonl"
    other_file.write_text("".join(json.dumps(r) + "\n" for r in [QA[0], dict(QA[1], output="8")]))
    changed = {
        "records": base_eval_key(model, tokenizer, data, evals, {"test": str(other_file)}),
        "max_new_tokens": base_eval_key(model, tokenizer, data, evals.model_copy(update={"max_new_tokens": 7}), splits),
        "system_prompt": base_eval_key(model, tokenizer, data.model_copy(update={"system_prompt": "Be brief."}),
                                       evals, splits),
    }
    with torch.no_grad():  # one weight in the middle of the model
        model.model.layers[0].self_attn.v_proj.weight[3, 5] += 1e-3
    changed["weights"] = base_eval_key(model, tokenizer, data, evals, splits)
    for what, other in changed.items():
        assert cache_path(other) != cache_path(key), what


def test_same_records_elsewhere_differ_only_by_spec(model, setting, tmp_path):
    """The records are hashed without `_origin`: a copy of the file hashes the same."""
    tokenizer, data, evals, splits = setting
    copy = tmp_path / "copy.jsonl"
    copy.write_text((tmp_path / "test.jsonl").read_text())
    a = base_eval_key(model, tokenizer, data, evals, splits)["splits"]["test"]
    b = base_eval_key(model, tokenizer, data, evals, {"test": str(copy)})["splits"]["test"]
    assert a["records"] == b["records"] and a["spec"] != b["spec"]


def test_installing_lora_keeps_the_key(model, setting):
    key = base_eval_key(model, *setting)
    installed = apply_method(model, LoraConfig(r=4, alpha=8, targets="all-linear"))
    assert base_eval_key(model, *setting) == key
    with torch.no_grad():  # trained LoRA: still the same base
        for param in installed.trainable():
            param.add_(0.1)
    assert base_eval_key(model, *setting) == key


def test_corrupt_entry_is_recomputed_and_replaced(home, model, setting, capsys):
    key = base_eval_key(model, *setting)
    path = cache_path(key)
    path.parent.mkdir(parents=True)
    path.write_text('{"key": {"trunc')
    compute = Counter()
    assert cached_base_eval(key, compute) == Counter()()
    assert compute.calls == 1
    assert "ignoring the cache" in capsys.readouterr().out
    assert json.loads(path.read_text())["result"] == Counter()()
    cached_base_eval(key, compute)
    assert compute.calls == 1


def test_entry_for_another_key_is_not_trusted(home, model, setting):
    key = base_eval_key(model, *setting)
    path = cache_path(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": {"other": 1}, "result": {"test": {}}}))
    compute = Counter()
    assert cached_base_eval(key, compute) == Counter()() and compute.calls == 1


def test_no_cache_env_bypasses_reading(home, model, setting, monkeypatch):
    key = base_eval_key(model, *setting)
    compute = Counter()
    cached_base_eval(key, compute)
    monkeypatch.setenv("DELTATUNE_NO_CACHE", "1")
    cached_base_eval(key, compute)
    assert compute.calls == 2
    monkeypatch.delenv("DELTATUNE_NO_CACHE")
    cached_base_eval(key, compute)
    assert compute.calls == 2


# -- the base-weights fingerprint under every method (also the replay cache's key)

METHOD_CONFIGS = EXAMPLES  # every method (tests/method_examples.py)


def test_every_method_has_a_config_here():
    assert set(METHOD_CONFIGS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHOD_CONFIGS))
def test_fingerprint_is_the_bare_base_s_under_any_method(model, tiny_llama_dir, name):
    cfg = METHODS[name].config_cls.model_validate(METHOD_CONFIGS[name])
    if METHODS[name].load_base is not None:  # the base this method trains against (qlora: 4-bit)
        model = METHODS[name].load_base(ModelConfig(name=str(tiny_llama_dir)), device="cpu", method_cfg=cfg)[0]
    bare = base_weights_fingerprint(model)
    replay_key = answers._cache_key(model, ["a prompt"], None, 16)
    installed = apply_method(model, cfg)
    assert base_weights_fingerprint(model) == bare
    assert answers._cache_key(model, ["a prompt"], None, 16) == replay_key
    with torch.no_grad():  # what training does to the method's tensors
        for param in installed.trainable():
            param.add_(0.01)
    if METHODS[name].trains_base_weights:  # trained in place: these are no longer the base weights
        assert base_weights_fingerprint(model) != bare
    else:
        assert base_weights_fingerprint(model) == bare
        assert answers._cache_key(model, ["a prompt"], None, 16) == replay_key
