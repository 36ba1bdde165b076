"""Our DoRA against HF `peft` with `use_dora=True` (the reference): same A, B, m -> same logits
and the same gradients of A, B and m; dropout handled the same way; PiSSA / OLoRA starts equal
to peft's; adapters that load in each other's loaders; merge equal to unmerged.

Tolerance: 1e-5 absolute on logits, loss and gradients (fp32; the two compute the same terms
in a different order: peft's norm uses B(A(I)).T, ours B @ A).

    .venv/bin/pytest tests/parity/test_dora_peft.py
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

peft = pytest.importorskip("peft")

from deltatune.methods import core  # noqa: E402
from deltatune.methods.dora import DoraConfig, DoRALinear  # noqa: E402
from deltatune.methods.modules import wrappers  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def biased():
    """A tiny Llama whose attention and MLP Linears carry (non-zero) biases: the bias is not scaled."""
    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.5)
    return model


def _ours(base, seed=5, **kw) -> tuple[torch.nn.Module, DoraConfig]:
    """DoRA on a copy of `base` with B moved off zero and m off ||W0||, so every term shows."""
    cfg = DoraConfig(**{"r": 4, "alpha": 8, **kw})
    model = copy.deepcopy(base)
    core.apply_method(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B.weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("lora_magnitude_vector"):
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    return model, cfg


def _peft(base, cfg: DoraConfig, targets, init=True):
    ref_cfg = peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, use_rslora=cfg.rslora, target_modules=targets,
        use_dora=True, init_lora_weights=init, task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(copy.deepcopy(base), ref_cfg)


def _peft_name(ours: str) -> str:
    """Our parameter name -> the same parameter's name inside a peft model (adapter `default`)."""
    name = "base_model.model." + ours.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
    return name.replace(".lora_magnitude_vector", ".lora_magnitude_vector.default.weight")


def _paired(ours, ref) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """(our trainable, peft's) for every trainable tensor; the two sets must be the same."""
    mine = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    theirs = {n: p for n, p in ref.named_parameters() if p.requires_grad}
    assert {_peft_name(n) for n in mine} == set(theirs)
    assert any(n.endswith("lora_magnitude_vector") for n in mine)
    return [(p, theirs[_peft_name(n)]) for n, p in mine.items()]


def _copy_into_peft(pairs) -> None:
    with torch.no_grad():
        for mine, theirs in pairs:
            theirs.copy_(mine)


def _assert_same_forward_and_grads(ours, ref, ids, pairs, seed=None) -> None:
    """Train mode: same loss; the same logits; the same gradient of every A, B and m."""
    ours.train(), ref.train()
    if seed is not None:
        torch.manual_seed(seed)
    loss_ours = ours(input_ids=ids, labels=ids).loss
    if seed is not None:
        torch.manual_seed(seed)
    loss_ref = ref(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    loss_ours.backward()
    loss_ref.backward()
    for mine, theirs in pairs:
        assert mine.grad is not None and mine.grad.abs().sum() > 0
        torch.testing.assert_close(mine.grad, theirs.grad, **TOL)
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, **TOL)


@pytest.mark.parametrize("model_name", ["base", "biased"])
@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj", "down_proj"]])
def test_same_weights_give_same_logits_and_gradients(request, batch, model_name, rslora, targets):
    model = request.getfixturevalue(model_name)
    ours, cfg = _ours(model, rslora=rslora, targets=targets)
    ref = _peft(model, cfg, targets)
    pairs = _paired(ours, ref)
    _copy_into_peft(pairs)
    _assert_same_forward_and_grads(ours, ref, batch["input_ids"], pairs)


def test_dropout_is_applied_as_peft_applies_it(biased, batch):
    """Train mode with dropout: the same random masks (same seed, same draw order) give the same
    loss and gradients only if both terms of the DoRA path see the dropped input, as in peft."""
    ours, cfg = _ours(biased, dropout=0.3)
    ref = _peft(biased, cfg, "all-linear")
    pairs = _paired(ours, ref)
    _copy_into_peft(pairs)
    _assert_same_forward_and_grads(ours, ref, batch["input_ids"], pairs, seed=11)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_starts_match_peft(base, batch, init):
    """peft writes W0 - s B0 A0 into the base; we subtract B0 A0 beside it: the same A, B and m
    at the start (m = ||W0||), the same function of A, B, m afterwards."""
    cfg = DoraConfig(r=4, alpha=8, init=init)
    ours = copy.deepcopy(base)
    core.apply_method(ours, cfg)
    ref = _peft(base, cfg, "all-linear", init=init)
    pairs = _paired(ours, ref)
    for mine, theirs in pairs:  # same starting factors and magnitudes, computed independently
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ours(batch["input_ids"]).logits, base(batch["input_ids"]).logits, **TOL)
        gen = torch.Generator().manual_seed(2)
        for mine, _ in pairs:
            mine.add_(0.02 * torch.randn(mine.shape, generator=gen))
    _copy_into_peft(pairs)
    _assert_same_forward_and_grads(ours, ref, batch["input_ids"], pairs)


def test_saved_adapter_loads_in_peft_and_has_peft_keys(base, batch, tmp_path, tiny_llama_dir):
    ours, cfg = _ours(base, targets=["q_proj", "v_proj", "down_proj"])
    out = core.save_adapter(ours, cfg, tmp_path / "ours", tiny_llama_dir)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["peft_type"] == "LORA" and meta["use_dora"] is True

    ref_model = _peft(base, cfg, ["q_proj", "v_proj", "down_proj"])
    ref_model.save_pretrained(tmp_path / "peft")  # what peft itself writes for the same adapter
    theirs = set(load_file(tmp_path / "peft" / "adapter_model.safetensors"))
    mine = set(load_file(out / "adapter_model.safetensors"))
    assert mine == theirs
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector" in mine

    ref = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(meta["base_model_name_or_path"]), out)
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(**batch).logits, ours(**batch).logits, **TOL)


def test_peft_saved_dora_adapter_loads_in_ours_as_dora(base, batch, tmp_path):
    ref = _peft(base, DoraConfig(r=4, alpha=8), ["k_proj", "up_proj"])
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
            elif "lora_magnitude_vector" in n:
                p.mul_(1.5)
    ref.save_pretrained(tmp_path / "peft")  # plain peft folder: no deltatune json
    fresh = copy.deepcopy(base)
    cfg = core.load_adapter(fresh, tmp_path / "peft")
    assert cfg.name == "dora" and (cfg.r, cfg.alpha) == (4, 8)
    assert all(isinstance(w, DoRALinear) for w in wrappers(fresh).values()) and len(wrappers(fresh)) == 4
    with torch.no_grad():
        torch.testing.assert_close(fresh(**batch).logits, ref.eval()(**batch).logits, **TOL)


def test_merge_equals_unmerged_and_peft_merge(base, batch):
    """merge == unmerged within 1e-5; our merged weights == peft's merge_and_unload; unmerge
    restores W0; merge_and_unload leaves a plain model with the base's keys."""
    ours, cfg = _ours(base, rslora=True)
    ref = _peft(base, cfg, "all-linear")
    _copy_into_peft(_paired(ours, ref))
    w0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    with torch.no_grad():
        want = ours(**batch).logits
        core.merge(ours)
        torch.testing.assert_close(ours(**batch).logits, want, **TOL)
        core.unmerge(ours)
        for name, layer in wrappers(ours).items():
            torch.testing.assert_close(layer.base_layer.weight, w0[name + ".weight"], **TOL)
        torch.testing.assert_close(ours(**batch).logits, want, **TOL)
        plain = core.merge_and_unload(ours)
        merged_ref = ref.merge_and_unload()
        assert set(plain.state_dict()) == set(base.state_dict())
        for name, p in plain.state_dict().items():
            torch.testing.assert_close(p, merged_ref.state_dict()[name], **TOL)
        torch.testing.assert_close(plain(**batch).logits, want, **TOL)
