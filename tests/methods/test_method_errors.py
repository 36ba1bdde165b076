"""Bad method input fails early with a message that says what exists and what to do.

    .venv/bin/pytest tests/methods/test_method_errors.py
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from deltatune.config import validate_config
from deltatune.errors import DeltatuneError
from deltatune.methods import core
from deltatune.methods.modules import wrappers
from deltatune.methods.freeze import FreezeConfig
from deltatune.methods.lora import LoraConfig
from deltatune.methods.modules import find_block_list, match_linear_targets


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.mark.parametrize("targets", ["q_prj", ["q_proj", "valu"], "re:.*attention.*"])
def test_lora_targets_matching_nothing_list_the_modules_that_exist(base, targets):
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError) as err:
        core.apply_method(model, LoraConfig(targets=targets))
    msg = str(err.value)
    bad = targets[1] if isinstance(targets, list) else targets
    assert repr(bad) in msg and "method.targets" in msg
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in msg
    assert msg.count("q_proj") <= 3, "names must be deduplicated across layers"
    assert all(p.requires_grad for p in model.parameters()), "a failed apply must leave the model as it was"
    assert not wrappers(model)


def test_all_linear_skips_the_tied_output_head(base):
    names = match_linear_targets(base, "all-linear")
    assert "lm_head" not in names and len(names) == 2 * 7
    assert match_linear_targets(base, r"re:model\.layers\.0\..*_proj")[0] == "model.layers.0.self_attn.q_proj"
    with pytest.raises(DeltatuneError, match="bad regex"):
        match_linear_targets(base, "re:(")


def test_block_list_found_generically(base):
    name, blocks = find_block_list(base)
    assert name == "model.layers" and len(blocks) == 2


@pytest.mark.parametrize(
    "bad",
    [{"r": 0}, {"r": -4}, {"alpha": 0}, {"dropout": 1.0}, {"dropout": -0.1}, {"targets": []}, {"rank": 8}],
)
def test_bad_lora_values_rejected_by_config(bad):
    with pytest.raises(ValidationError):
        LoraConfig(**bad)


def test_bad_values_fail_at_config_load_naming_the_key():
    with pytest.raises(DeltatuneError, match=r"method\.r"):
        validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "lora", "r": 0}})
    with pytest.raises(DeltatuneError, match="alpha"):
        validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "lora", "alpah": 3}})
    cfg = validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "freeze", "train_last_n_blocks": 2}})
    assert isinstance(cfg.method, FreezeConfig)


def test_freeze_must_select_something(base):
    with pytest.raises(ValidationError, match="trains nothing"):
        FreezeConfig()
    with pytest.raises(DeltatuneError, match="only 2 blocks"):
        core.apply_method(copy.deepcopy(base), FreezeConfig(train_last_n_blocks=3))
    with pytest.raises(DeltatuneError, match="mlpp") as err:
        core.apply_method(copy.deepcopy(base), FreezeConfig(train_modules=["mlpp"]))
    assert "mlp" in str(err.value).replace("'mlpp'", "")


def test_freeze_modules_by_name_and_regex(base):
    model = copy.deepcopy(base)
    core.apply_method(model, FreezeConfig(train_modules=["o_proj", r"re:model\.layers\.0\.mlp"], train_embeddings=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    }


def test_applying_twice_is_refused(base):
    model = copy.deepcopy(base)
    core.apply_method(model, LoraConfig(targets=["q_proj"]))
    with pytest.raises(DeltatuneError, match="already has a method installed"):
        core.apply_method(model, LoraConfig(targets=["v_proj"]))


def test_bad_adapter_folders(base, tmp_path, tiny_llama_dir):
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError, match="not found"):
        core.load_adapter(model, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeltatuneError, match="not an adapter folder"):
        core.load_adapter(model, tmp_path / "empty")
    # A PEFT folder with only a pickled .bin is refused, never unpickled.
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    peft_json = {"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}
    (pickled / "adapter_config.json").write_text(json.dumps(peft_json))
    (pickled / "adapter_model.bin").write_bytes(b"not read")
    with pytest.raises(DeltatuneError, match="never loaded"):
        core.load_adapter(model, pickled)
    # PEFT features our LoRA lacks are refused, not silently dropped.
    (pickled / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_bias": True}))
    with pytest.raises(DeltatuneError, match="lora_bias"):
        core.load_adapter(model, pickled)
    # An adapter trained with another rank / for another base: shapes are checked.
    lora = copy.deepcopy(base)
    core.apply_method(lora, LoraConfig(r=4, targets=["q_proj"]))
    out = core.save_adapter(lora, LoraConfig(r=4, targets=["q_proj"]), tmp_path / "ad", tiny_llama_dir)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    tensors = load_file(out / "adapter_model.safetensors")
    tensors[key] = torch.zeros(4, 7)
    save_file(tensors, out / "adapter_model.safetensors")
    with pytest.raises(DeltatuneError, match="shape"):
        core.load_adapter(copy.deepcopy(base), out)
    # Never write over a folder that is not an adapter.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DeltatuneError, match="not an adapter folder"):
        core.save_adapter(lora, LoraConfig(r=4, targets=["q_proj"]), tmp_path / "mine", tiny_llama_dir)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
