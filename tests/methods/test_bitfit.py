"""BitFit: only biases train; zero biases added to bias-free Linears behave exactly like real
ones (a transformers Llama built with attention_bias / mlp_bias is the reference), and a merged
model saves and loads in plain transformers.

    OMP_NUM_THREADS=1 .venv/bin/pytest tests/methods/test_bitfit.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.methods import core
from deltatune.methods.bitfit import BitFitConfig, bias_config_flags


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))


def _with_real_biases(base, biases: dict[str, torch.Tensor] | None = None) -> LlamaForCausalLM:
    """The base's weights in a Llama whose q/k/v/o and gate/up/down have biases (zero, or `biases`)."""
    cfg = LlamaConfig(**{**base.config.to_dict(), "attention_bias": True, "mlp_bias": True})
    ref = LlamaForCausalLM(cfg).eval()
    state = {k: v for k, v in base.state_dict().items()}
    for name, module in ref.named_modules():
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            state[f"{name}.bias"] = (biases or {}).get(name, torch.zeros(module.out_features))
    ref.load_state_dict(state, strict=True)
    return ref


def test_added_zero_biases_equal_real_biases_in_value_and_gradient(base, ids):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, BitFitConfig())
    ref = _with_real_biases(base)
    with torch.no_grad():
        torch.testing.assert_close(all_logits(model, ids), all_logits(base, ids), rtol=0, atol=0)  # step 0 = base
    all_logits(model, ids).logsumexp(-1).sum().backward()
    ref.requires_grad_(False)
    biases = {n: m.bias for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear) and m.bias is not None}
    for b in biases.values():
        b.requires_grad_(True)
    all_logits(ref, ids).logsumexp(-1).sum().backward()
    assert set(installed.wrappers) == set(biases)
    for name, wrapper in installed.wrappers.items():
        torch.testing.assert_close(wrapper.bitfit_bias.grad, biases[name].grad, rtol=1e-5, atol=1e-6)


def test_merged_model_loads_in_plain_transformers(base, ids, tmp_path):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, BitFitConfig())
    trained = {}
    with torch.no_grad():
        for name, wrapper in installed.wrappers.items():
            wrapper.bitfit_bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(trained)))
            trained[name] = wrapper.bitfit_bias.detach().clone()
        want = all_logits(model, ids)
        torch.testing.assert_close(want, all_logits(_with_real_biases(base, trained), ids), rtol=0, atol=1e-5)
    plain = core.merge_and_unload(model)
    assert plain.config.attention_bias and plain.config.mlp_bias  # every q/k/v/o and gate/up/down targeted
    plain.save_pretrained(tmp_path / "merged")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(all_logits(loaded, ids), want, rtol=0, atol=1e-5)


def test_partial_targets_set_no_flag_and_say_why(base, capsys):
    model = copy.deepcopy(base)
    core.apply_method(model, BitFitConfig(targets=["q_proj", "v_proj"]))
    assert "added zero-initialised biases" in capsys.readouterr().out
    plain = core.merge_and_unload(model)
    assert not plain.config.attention_bias and not plain.config.mlp_bias
    assert "no config flag" in capsys.readouterr().out
    flags, uncovered = bias_config_flags(plain, ["model.layers.0.self_attn.q_proj"])
    assert flags == {} and uncovered == ["model.layers.0.self_attn.q_proj"]


def test_existing_biases_train_as_they_are(base, ids):
    gen = torch.Generator().manual_seed(1)
    with_bias = _with_real_biases(base)
    with torch.no_grad():
        for m in with_bias.modules():
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.1, generator=gen)
    snapshot = {k: v.clone() for k, v in with_bias.state_dict().items()}
    model = copy.deepcopy(with_bias)
    installed = core.apply_method(model, BitFitConfig())
    assert not any(w.adds_bias for w in installed.wrappers.values())
    assert core.count_parameters(model)[0] == 2 * ((64 + 32 + 32 + 64) + (128 + 128 + 64))
    with torch.no_grad():
        torch.testing.assert_close(all_logits(model, ids), all_logits(with_bias, ids), rtol=0, atol=0)
        for w in installed.wrappers.values():
            w.bitfit_bias.add_(0.05)
        want = all_logits(model, ids)
    plain = core.merge_and_unload(model)
    assert set(plain.state_dict()) == set(snapshot)  # no new key: the existing biases hold b0 + delta
    q = "model.layers.0.self_attn.q_proj.bias"
    torch.testing.assert_close(plain.state_dict()[q], snapshot[q] + 0.05)
    with torch.no_grad():
        torch.testing.assert_close(all_logits(plain, ids), want, rtol=0, atol=1e-5)


def test_bad_targets_name_the_key(base):
    with pytest.raises(DeltatuneError, match="method.targets"):
        core.apply_method(copy.deepcopy(base), BitFitConfig(targets=["nope_proj"]))
