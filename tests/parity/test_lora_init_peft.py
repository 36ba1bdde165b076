"""LoRA's `method.init` (pissa, olora, gaussian) against HF `peft` (`init_lora_weights=...`).

We keep the base as it is and subtract the start product, h = W0 x + s (B A - B0 A0) x; peft
rewrites the base to W0 - s B0 A0. Same function, so: the same starting A and B as peft's, the
base's output at step 0, the same logits and gradients once A and B move alike, and a saved
adapter (the plain rank-2r LoRA, deltatune.methods.lora.convert) that loads in peft over a fresh
ORIGINAL base, equals what peft's own conversion writes, and loads back into deltatune as LoRA.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/parity/test_lora_init_peft.py

Tolerances: A/B at init are compared exactly (the same fp32 SVD / QR / draws on the CPU);
logits, losses and A/B gradients within 1e-5 absolute (measured: logits <= 7e-7, gradients
<= 2e-7 of gradients up to 0.26). The two sides differ only by fp32 rounding: both cancel O(1)
terms (B A - B0 A0 here, (W0 - s B0 A0) + s B A in peft), PiSSA's B A being W0's principal part.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

peft = pytest.importorskip("peft")

from deltatune.config import TrainConfig, load_config  # noqa: E402
from deltatune.data.batching import collate  # noqa: E402
from deltatune.errors import DeltatuneError  # noqa: E402
from deltatune.losses.lm import model_lm_loss  # noqa: E402
from deltatune.methods import core  # noqa: E402
from deltatune.methods.lora import LoraConfig, start_product_to_rank_2r  # noqa: E402
from deltatune.methods.modules import wrappers  # noqa: E402
from deltatune.training.step import OptimiserStep  # noqa: E402

TOL = dict(rtol=0, atol=1e-5)
STARTS_WITH_PRODUCT = ["pissa", "olora"]


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _peft_name(ours: str) -> str:
    return "base_model.model." + ours.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


def _pair(base, init: str, rslora: bool = False, seed: int = 3):
    """(ours, cfg, peft's) with the same init on copies of `base`; the same seed before each, so
    the random inits draw the same numbers (both build nn.Linear A then B, then re-initialise)."""
    cfg = LoraConfig(r=4, alpha=8, init=init, rslora=rslora)
    ours = copy.deepcopy(base)
    torch.manual_seed(seed)
    core.apply_method(ours, cfg)
    torch.manual_seed(seed)
    ref = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, use_rslora=rslora, init_lora_weights=init,
        target_modules="all-linear", task_type="CAUSAL_LM"))
    return ours, cfg, ref


def _factors(model):
    """The trainable A / B matrices by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _move_alike(ours, ref=None, seed=7, scale=0.05):
    """Add the same perturbation to A and B in ours and (if given) peft's, as if both had taken
    the same optimiser steps."""
    gen = torch.Generator().manual_seed(seed)
    ref_params = dict(ref.named_parameters()) if ref is not None else {}
    with torch.no_grad():
        for name, p in sorted(_factors(ours).items()):
            delta = scale * torch.randn(p.shape, generator=gen)
            p.add_(delta)
            if ref is not None:
                ref_params[_peft_name(name)].add_(delta)


@pytest.mark.parametrize("init", STARTS_WITH_PRODUCT + ["gaussian"])
def test_start_factors_equal_peft_and_model_equals_base(base, batch, init):
    ours, _, ref = _pair(base, init)
    theirs = dict(ref.named_parameters())
    ours_ab = _factors(ours)
    assert {_peft_name(n) for n in ours_ab} == {n for n, p in theirs.items() if p.requires_grad}
    for name, p in ours_ab.items():
        torch.testing.assert_close(p, theirs[_peft_name(name)], rtol=0, atol=0)
    want = _logits(base, batch)
    torch.testing.assert_close(_logits(ours, batch), want, **TOL)  # equals the base at step 0
    torch.testing.assert_close(_logits(ref, batch), want, **TOL)
    for name, wrapper in wrappers(ours).items():  # our base is never written (peft's is, for pissa/olora)
        assert torch.equal(wrapper.base_layer.weight, base.get_submodule(name).weight)
        assert wrapper.has_start_product == (init in STARTS_WITH_PRODUCT)


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("init", STARTS_WITH_PRODUCT)
def test_moved_factors_give_peft_logits_and_gradients(base, batch, init, rslora):
    ours, _, ref = _pair(base, init, rslora)
    _move_alike(ours, ref)
    ours.train(), ref.train()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss_ours = ours(**batch, labels=labels).loss
    loss_ref = ref(**batch, labels=labels).loss
    torch.testing.assert_close(loss_ours, loss_ref, **TOL)
    torch.testing.assert_close(_logits(ours, batch), _logits(ref, batch), **TOL)
    assert not torch.allclose(_logits(ours, batch), _logits(base, batch), atol=1e-3)
    loss_ours.backward()
    loss_ref.backward()
    theirs = dict(ref.named_parameters())
    for name, p in _factors(ours).items():
        assert p.grad is not None and p.grad.abs().sum() > 0
        torch.testing.assert_close(p.grad, theirs[_peft_name(name)].grad, **TOL)


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("init", STARTS_WITH_PRODUCT)
def test_saved_adapter_is_plain_rank_2r_lora_in_peft_and_ours(base, batch, tmp_path, tiny_llama_dir, init, rslora):
    ours, cfg, _ = _pair(base, init, rslora)
    _move_alike(ours)
    want = _logits(ours, batch)
    out = core.save_adapter(ours, cfg, tmp_path / "adapter", tiny_llama_dir)

    meta = json.loads((out / "adapter_config.json").read_text())
    assert (meta["r"], meta["init_lora_weights"], meta["use_rslora"]) == (8, True, rslora)
    assert meta["lora_alpha"] == pytest.approx(8 * (math.sqrt(2) if rslora else 2))
    tensors = load_file(out / "adapter_model.safetensors")
    assert not [k for k in tensors if "lora_A0" in k or "lora_B0" in k]
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (8, 64)
    assert core.trainable_state_dict(ours)["model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, 64), \
        "the live installation (and so checkpoints) keeps rank r and the start product"

    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)  # a fresh, unmodified base
    ref = peft.PeftModel.from_pretrained(original, out).eval()
    torch.testing.assert_close(_logits(ref, batch), want, **TOL)

    fresh = copy.deepcopy(base)
    loaded = core.load_adapter(fresh, out)
    assert loaded == LoraConfig(r=8, alpha=meta["lora_alpha"], rslora=rslora, init="default")
    torch.testing.assert_close(_logits(fresh, batch), want, **TOL)
    assert not any(w.has_start_product for w in wrappers(fresh).values())


@pytest.mark.parametrize("init", STARTS_WITH_PRODUCT)
def test_saved_tensors_equal_peft_own_conversion(base, tmp_path, tiny_llama_dir, init):
    """peft's save_pretrained(path_initial_model_for_weight_conversion=...) writes what we write."""
    ours, cfg, ref = _pair(base, init)
    ref.peft_config["default"].init_lora_weights = True  # how peft's docs save the initial adapter
    ref.save_pretrained(tmp_path / "peft-init")
    ref.peft_config["default"].init_lora_weights = init
    _move_alike(ours, ref)
    ref.save_pretrained(tmp_path / "peft-converted", path_initial_model_for_weight_conversion=tmp_path / "peft-init")
    core.save_adapter(ours, cfg, tmp_path / "ours", tiny_llama_dir)
    theirs = load_file(tmp_path / "peft-converted" / "adapter_model.safetensors")
    mine = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    assert set(mine) == set(theirs)
    for key, tensor in mine.items():
        torch.testing.assert_close(tensor, theirs[key], rtol=0, atol=1e-6)
    their_cfg = json.loads((tmp_path / "peft-converted" / "adapter_config.json").read_text())
    assert (their_cfg["r"], their_cfg["lora_alpha"]) == (8, 16)


def test_merge_of_a_pissa_adapter_equals_unmerged(base, batch):
    ours, _, _ = _pair(base, "pissa")
    _move_alike(ours)
    layer = ours.model.layers[0].self_attn.q_proj
    w0 = layer.base_layer.weight.detach().clone()
    want = _logits(ours, batch)
    core.merge(ours)
    torch.testing.assert_close(_logits(ours, batch), want, **TOL)
    core.unmerge(ours)
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(ours, batch), want, **TOL)
    plain = core.merge_and_unload(ours)
    torch.testing.assert_close(_logits(plain, batch), want, **TOL)


def test_training_step_with_pissa_moves_only_a_and_b(base):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, LoraConfig(r=4, alpha=8, init="pissa"))
    gen = torch.Generator().manual_seed(4)
    examples = []
    for length, prompt in ((11, 4), (7, 3)):
        tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
        examples.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
    batch = collate(examples, pad_id=0)
    before = {**{n: p.detach().clone() for n, p in model.named_parameters()},
              **{n: b.detach().clone() for n, b in model.named_buffers()}}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-3), total_steps=2, loss_fn=model_lm_loss)
    for step in (1, 2):
        stepper.step([batch], step)
    after = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    moved = {n for n, t in after.items() if not torch.equal(before[n], t.detach())}
    assert moved and all(n.endswith((".lora_A.weight", ".lora_B.weight")) for n in moved), sorted(moved)[:5]
    assert len(moved) == 2 * len(installed.wrappers)


def test_conversion_is_the_identity_on_tensors_and_a_no_op_without_start_products():
    gen = torch.Generator().manual_seed(0)
    a, b, a0, b0 = (torch.randn(s, generator=gen) for s in ((3, 6), (5, 3), (3, 6), (5, 3)))
    extra = torch.randn(5, generator=gen)  # e.g. a DoRA magnitude: passes through
    state = {"m.lora_A.weight": a, "m.lora_B.weight": b, "m.lora_A0": a0, "m.lora_B0": b0, "m.magnitude": extra}
    cfg, out = start_product_to_rank_2r(LoraConfig(r=3, alpha=6, init="olora"), state)
    assert cfg == LoraConfig(r=6, alpha=12, init="default")
    assert set(out) == {"m.lora_A.weight", "m.lora_B.weight", "m.magnitude"} and out["m.magnitude"] is extra
    torch.testing.assert_close(out["m.lora_B.weight"] @ out["m.lora_A.weight"], b @ a - b0 @ a0)
    cfg, _ = start_product_to_rank_2r(LoraConfig(r=3, alpha=6, rslora=True, init="pissa"), state)
    assert cfg.alpha / math.sqrt(cfg.r) == pytest.approx(6 / math.sqrt(3))
    plain = {"m.lora_A.weight": a, "m.lora_B.weight": b}
    same_cfg = LoraConfig(r=3, alpha=6)
    assert start_product_to_rank_2r(same_cfg, plain) == (same_cfg, plain)


def test_rank_2r_must_fit_every_layer_for_pissa_and_olora(base):
    # k_proj / v_proj are 64 -> 32: r=16 saves as rank 32 (fits), r=17 as 34 (does not)
    core.apply_method(copy.deepcopy(base), LoraConfig(r=16, alpha=16, init="olora", targets=["k_proj"]))
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError, match=r"method\.r=17 with method\.init=pissa.*2r=34.*r <= 16"):
        core.apply_method(model, LoraConfig(r=17, alpha=16, init="pissa", targets=["k_proj"]))
    assert not wrappers(model)
    core.apply_method(copy.deepcopy(base), LoraConfig(r=17, alpha=16, targets=["k_proj"]))  # default: r <= 32 fits


def test_unconverted_peft_pissa_folder_is_refused(base, tmp_path):
    """A folder peft saved without conversion only fits peft's rewritten (residual) base."""
    ref = _pair(base, "pissa")[2]
    ref.save_pretrained(tmp_path / "raw")
    with pytest.raises(DeltatuneError, match=r"init_lora_weights='pissa'.*path_initial_model_for_weight_conversion"):
        core.load_adapter(copy.deepcopy(base), tmp_path / "raw")


def test_ready_pissa_config_loads_with_a_lower_lr_than_loras():
    root = Path(__file__).resolve().parents[2] / "configs" / "smollm2"
    cfg = load_config(root / "sft_pissa.yaml")
    assert (cfg.method.name, cfg.method.init, cfg.method.dropout) == ("lora", "pissa", 0.0)
    assert cfg.train.lr < load_config(root / "sft_lora.yaml").train.lr
