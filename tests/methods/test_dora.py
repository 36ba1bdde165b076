"""DoRA by hand and in training: the layer is eq. (5) of Liu et al. 2024 with the norm detached
(§4.3); every init starts at the base with m = ||W0||; PiSSA / OLoRA starts train and merge;
LoRA+ groups; peft-folder routing; bad input.

    .venv/bin/pytest tests/methods/test_dora.py
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig, load_config, validate_config
from deltatune.data.batching import collate
from deltatune.errors import DeltatuneError
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.dora import DoraConfig, DoRALinear
from deltatune.methods.dora import peft_format as dora_format
from deltatune.methods.modules import wrappers
from deltatune.methods.registry import METHODS
from deltatune.training.step import OptimiserStep


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(4)
    examples = []
    for length, prompt in ((11, 4), (7, 3)):
        tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
        examples.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
    return collate(examples, pad_id=0)


def _layer(dropout=0.0, init="default", seed=0) -> DoRALinear:
    torch.manual_seed(seed)
    layer = DoRALinear(torch.nn.Linear(6, 5), r=3, alpha=6, dropout=dropout, init=init)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
        layer.lora_magnitude_vector.mul_(torch.rand(5) + 0.5)
    return layer


def test_layer_is_the_papers_equation_with_the_norm_detached():
    """h = m (W0 + s B A) / ||W0 + s B A||_row x + b (bias unscaled); gradients of A, B, m those
    of the same expression with the norm a constant (paper §4.3)."""
    layer = _layer()
    x = torch.randn(4, 6)
    w0, b = layer.base_layer.weight, layer.base_layer.bias
    a, bb, m = (t.detach().clone().requires_grad_() for t in
                (layer.lora_A.weight, layer.lora_B.weight, layer.lora_magnitude_vector))
    v = w0 + 2.0 * bb @ a  # s = alpha / r = 2
    want = F.linear(x, m[:, None] * v / v.norm(dim=1, keepdim=True).detach(), b)
    got = layer(x)
    torch.testing.assert_close(got, want)
    cotangent = torch.randn_like(got)
    (got * cotangent).sum().backward()
    (want * cotangent).sum().backward()
    for ours, ref in ((layer.lora_A.weight, a), (layer.lora_B.weight, bb), (layer.lora_magnitude_vector, m)):
        torch.testing.assert_close(ours.grad, ref.grad)


def test_dropout_drops_the_input_of_both_dora_terms():
    """Training with dropout (as peft): h = W0 x + b + (m/n - 1) W0 d(x) + (m/n) s B A d(x)."""
    layer = _layer(dropout=0.5).train()
    x = torch.randn(4, 6)
    torch.manual_seed(1)
    got = layer(x)
    torch.manual_seed(1)
    d = F.dropout(x, 0.5, training=True)
    w0, b = layer.base_layer.weight, layer.base_layer.bias
    a, bb, m = layer.lora_A.weight, layer.lora_B.weight, layer.lora_magnitude_vector
    scale = m / (w0 + 2.0 * bb @ a).norm(dim=1)
    want = x @ w0.T + b + (scale - 1) * (d @ w0.T) + scale * 2.0 * (d @ a.T @ bb.T)
    torch.testing.assert_close(got, want)
    layer.eval()  # no dropout in eval: the layer is W' x + b
    torch.testing.assert_close(layer(x), F.linear(x, scale[:, None] * (w0 + 2.0 * bb @ a), b))


@pytest.mark.parametrize("init", ["default", "gaussian", "pissa", "olora"])
def test_every_init_starts_at_the_base_with_m_the_row_norm(init):
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 6)
    layer = DoRALinear(linear, r=3, alpha=6, init=init)
    torch.testing.assert_close(layer.lora_magnitude_vector.detach(), linear.weight.norm(dim=1))
    assert layer.has_start_product == (init in ("pissa", "olora"))
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), linear(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_starts_train_and_merge(base, batch, init):
    """Real OptimiserStep steps move A, B and m only (start products and base bit-identical);
    merge == unmerged within 1e-5 with n from W0 + s(BA - B0A0); unmerge restores W0."""
    model = copy.deepcopy(base)
    installed = core.apply_method(model, DoraConfig(r=4, alpha=8, init=init))
    ids = batch["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, base(ids).logits, rtol=0, atol=1e-5)
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=3, loss_fn=model_lm_loss)
    losses = [stepper.step([batch], step).loss for step in (1, 2, 3)]
    assert losses[-1] < losses[0]
    model.eval()
    for name, tensor in model.state_dict().items():
        trains = name.endswith(("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"))
        assert torch.equal(before[name], tensor) != trains, name
    w0 = {name: w.base_layer.weight.detach().clone() for name, w in wrappers(model).items()}
    with torch.no_grad():
        want = model(ids).logits
        assert not torch.allclose(want, base(ids).logits, atol=1e-4)
        core.merge(model)
        torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=1e-5)
        core.unmerge(model)
        for name, layer in wrappers(model).items():
            torch.testing.assert_close(layer.base_layer.weight, w0[name], rtol=0, atol=1e-5)
        torch.testing.assert_close(model(ids).logits, want, rtol=0, atol=1e-5)
        plain = core.merge_and_unload(model)
        assert set(plain.state_dict()) == set(base.state_dict())
        torch.testing.assert_close(plain(ids).logits, want, rtol=0, atol=1e-5)


def test_lora_plus_groups_put_b_fast_and_m_undecayed(base, batch):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, DoraConfig(r=4, targets=["q_proj"]))
    cfg = TrainConfig(lr=1e-3, lr_ratio_b=16, weight_decay=0.1)
    groups = OptimiserStep(model, installed, cfg, total_steps=1, loss_fn=model_lm_loss).optimizer.param_groups
    layers = list(wrappers(model).values())
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert ids == [{id(w.lora_A.weight) for w in layers}, {id(w.lora_magnitude_vector) for w in layers},
                   {id(w.lora_B.weight) for w in layers}]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.1), (1e-3, 0.0), (16e-3, 0.1)]


def test_unmerge_refuses_a_zero_magnitude():
    layer = _layer()
    with torch.no_grad():
        layer.lora_magnitude_vector[2] = 0.0
    layer.merge()
    with pytest.raises(DeltatuneError, match="magnitude"):
        layer.unmerge()


def test_peft_folders_route_by_use_dora_and_unsupported_keys_are_refused():
    lora_twin, dora_twin = METHODS["lora"].peft, METHODS["dora"].peft
    assert dora_twin.accepts({"use_dora": True}) and not dora_twin.accepts({"use_dora": False})
    assert lora_twin.accepts({"use_dora": False}) and not lora_twin.accepts({"use_dora": True})
    raw = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True, "target_modules": ["q_proj"]}
    assert dora_format.config_from_peft(raw, "x") == DoraConfig(r=4, alpha=8, targets=["q_proj"])
    with pytest.raises(DeltatuneError, match="rank_pattern"):
        dora_format.config_from_peft({**raw, "rank_pattern": {"q_proj": 8}}, "x")
    with pytest.raises(DeltatuneError, match="use_dora"):
        dora_format.config_from_peft({**raw, "use_dora": False}, "x")


def test_config_keys_are_checked_and_the_ready_yaml_loads():
    cfg = load_config("configs/smollm2/sft_dora.yaml")
    assert isinstance(cfg.method, DoraConfig) and cfg.method.r == 16
    data = {"train": "x.jsonl"}
    with_plus = validate_config({"data": data, "method": {"name": "dora"}, "train": {"lr_ratio_b": 16}})
    assert with_plus.train.lr_ratio_b == 16  # LoRA+ applies: DoRA has B matrices
    for bad in ({"r": 0}, {"dropout": 1.0}, {"use_dora": True}, {"init": "svd"}):
        with pytest.raises((DeltatuneError, ValueError)):
            validate_config({"data": data, "method": {"name": "dora", **bad}})


def test_only_linear_layers_are_wrapped(base):
    from deltatune.methods.dora import wrap_dora

    with pytest.raises(DeltatuneError, match="nn.Linear only"):
        wrap_dora(torch.nn.Embedding(4, 4), DoraConfig(), "embed")
    with pytest.raises(DeltatuneError, match="method.r"):
        core.apply_method(copy.deepcopy(base), DoraConfig(r=40, targets=["k_proj"]))


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_a_pissa_or_olora_dora_saves_as_the_rank_2r_dora_it_equals(base, batch, tmp_path, tiny_llama_dir, init):
    """save_as: the folder holds a plain DoRA of rank 2r over the ORIGINAL base (magnitude kept),
    which peft loads with the same logits and deltatune loads back with init default."""
    peft = pytest.importorskip("peft")
    model = copy.deepcopy(base)
    installed = core.apply_method(model, DoraConfig(r=4, alpha=8, init=init))
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=2, loss_fn=model_lm_loss)
    for step in (1, 2):
        stepper.step([batch], step)
    model.eval()
    ids = batch["input_ids"]
    with torch.no_grad():
        want = model(ids).logits
    core.save_adapter(model, DoraConfig(r=4, alpha=8, init=init), tmp_path / "ad", tiny_llama_dir)
    fresh = copy.deepcopy(base)
    saved = core.load_adapter(fresh, tmp_path / "ad")
    assert (saved.name, saved.r, saved.alpha, saved.init) == ("dora", 8, 16, "default")
    ref = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ad").eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, want, rtol=0, atol=1e-5)
        torch.testing.assert_close(ref(ids).logits, want, rtol=0, atol=1e-5)
