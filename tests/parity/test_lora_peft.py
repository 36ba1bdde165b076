"""Our LoRA against HF `peft` (the reference): same A/B -> same logits and gradients, adapters
that load in each other's loaders, and merge/unmerge that are exact up to rounding.

    .venv/bin/pytest tests/parity/test_lora_peft.py
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

peft = pytest.importorskip("peft")

from deltatune.methods import core  # noqa: E402
from deltatune.methods.modules import wrappers  # noqa: E402
from deltatune.methods.lora import LoraConfig, LoRALinear  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 11), generator=torch.Generator().manual_seed(0))


def _ours(base, **kw) -> tuple[torch.nn.Module, LoraConfig]:
    cfg = LoraConfig(r=4, alpha=8, dropout=0.0, **kw)
    model = copy.deepcopy(base)
    core.apply_method(model, cfg)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B.weight"):  # B starts at zero: make the update visible
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model, cfg


def _peft(base, cfg: LoraConfig, targets):
    ref_cfg = peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, use_rslora=cfg.rslora, target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(copy.deepcopy(base), ref_cfg)


def _peft_name(ours: str) -> str:
    return "base_model.model." + ours.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]])
def test_same_weights_give_same_logits_and_gradients(base, ids, rslora, targets):
    ours, cfg = _ours(base, rslora=rslora, targets=targets)
    ref = _peft(base, cfg, targets)
    ours_lora = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    ref_lora = {n: p for n, p in ref.named_parameters() if p.requires_grad}
    # Same modules adapted (peft's all-linear and ours agree), same trainable count.
    assert {_peft_name(n) for n in ours_lora} == set(ref_lora)
    with torch.no_grad():
        for n, p in ours_lora.items():
            ref_lora[_peft_name(n)].copy_(p)
    ours.train(), ref.train()
    loss_ours = ours(input_ids=ids, labels=ids).loss
    loss_ref = ref(input_ids=ids, labels=ids).loss
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, **TOL)
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    loss_ours.backward()
    loss_ref.backward()
    for n, p in ours_lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, ref_lora[_peft_name(n)].grad, **TOL)


@pytest.mark.parametrize("kw", [{}, {"rslora": True}, {"targets": r"re:model\.layers\.1\.self_attn\.(q|k)_proj"}])
def test_saved_adapter_loads_in_peft(base, ids, tmp_path, tiny_llama_dir, kw):
    ours, cfg = _ours(base, **kw)
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)
    meta = json.loads((out / "adapter_config.json").read_text())
    assert meta["peft_type"] == "LORA" and meta["task_type"] == "CAUSAL_LM"
    assert meta["base_model_name_or_path"] == str(tiny_llama_dir.resolve())
    ref = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(meta["base_model_name_or_path"]), out)
    ref.eval()
    adapted = {n for n, m in ref.named_modules() if hasattr(m, "lora_A") and not n.endswith("lora_A")}
    assert len(adapted) == len(wrappers(ours))
    with torch.no_grad():
        torch.testing.assert_close(ref(ids).logits, ours(ids).logits, **TOL)


def test_peft_saved_adapter_loads_in_ours(base, ids, tmp_path):
    ref = _peft(base, LoraConfig(r=4, alpha=8), ["q_proj", "down_proj"])
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    ref.save_pretrained(tmp_path / "peft")  # plain PEFT folder: no deltatune json
    fresh = copy.deepcopy(base)
    cfg = core.load_adapter(fresh, tmp_path / "peft")
    assert (cfg.r, cfg.alpha, cfg.rslora) == (4, 8, False)
    assert len(wrappers(fresh)) == 4  # 2 layers x (q_proj, down_proj)
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, ref.eval()(ids).logits, **TOL)


def test_merge_equals_unmerged_and_unmerge_restores_weight(base, ids):
    ours, _ = _ours(base, rslora=True)
    layer = ours.model.layers[0].self_attn.q_proj
    w0 = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        want = ours(ids).logits
        core.merge(ours)
        delta = layer.base_layer.weight - w0
        torch.testing.assert_close(delta, layer.scaling * layer.lora_B.weight @ layer.lora_A.weight, **TOL)
        torch.testing.assert_close(ours(ids).logits, want, **TOL)
        core.unmerge(ours)
        torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours(ids).logits, want, **TOL)


def test_layer_is_the_papers_equation():
    """h = W0 x + b + (alpha/r) B A dropout(x), by hand, in train mode with dropout on."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 5)
    layer = LoRALinear(linear, r=3, alpha=6, dropout=0.5)
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(4, 6)
    torch.manual_seed(1)
    got = layer(x)
    torch.manual_seed(1)
    dropped = torch.nn.functional.dropout(x, 0.5, training=True)
    want = x @ linear.weight.T + linear.bias + (6 / 3) * dropped @ layer.lora_A.weight.T @ layer.lora_B.weight.T
    torch.testing.assert_close(got, want)
    assert LoRALinear(linear, r=4, alpha=6, rslora=True).scaling == pytest.approx(6 / 2)


def test_init_follows_the_paper_and_peft():
    """A ~ kaiming-uniform(a=sqrt 5) i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0 (adapted == base)."""
    layer = LoRALinear(torch.nn.Linear(256, 8), r=64, alpha=16)
    bound = 1 / math.sqrt(256)
    a = layer.lora_A.weight
    assert a.abs().max() <= bound and a.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.lora_B.weight) == 0
