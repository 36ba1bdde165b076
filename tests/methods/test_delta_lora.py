"""Delta-LoRA (Zi et al. 2023) against a hand computation of its update, through the real
training loop with a resume, save / load / merge, and a shared serving base it never writes.

    OMP_NUM_THREADS=1 .venv/bin/pytest tests/methods/test_delta_lora.py
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig, validate_config
from deltatune.data.batching import collate
from deltatune.data.tokenize import TokenizedDataset
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.delta_lora import DeltaLoraConfig
from deltatune.methods.modules import wrappers
from deltatune.training.checkpoint import latest_checkpoint, list_checkpoints
from deltatune.training.loop import train
from deltatune.training.metrics import read_metrics
from deltatune.training.step import OptimiserStep

Q = "model.layers.0.self_attn.q_proj"  # the layer the hand computation follows


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def dataset():
    gen = torch.Generator().manual_seed(0)
    examples = []
    for i in range(12):
        ids = torch.randint(5, 1000, (6 + i % 4,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100, -100] + ids[2:]})
    return TokenizedDataset(examples)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))


def _cfg(**kw) -> DeltaLoraConfig:
    return DeltaLoraConfig(**{"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj", "down_proj"], **kw})


def _stepped(base, dataset, steps: int, **kw):
    """(model, installed) after `steps` real optimiser steps on the dataset's first batch."""
    torch.manual_seed(0)
    model = copy.deepcopy(base)
    installed = core.apply_method(model, _cfg(**kw))
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=steps, loss_fn=model_lm_loss)
    batch = collate(dataset.examples[:4], pad_id=0)
    for step in range(1, steps + 1):
        stepper.step([batch], step)
    return model.eval(), installed


def test_config_defaults_are_the_papers_and_dropout_is_refused():
    cfg = DeltaLoraConfig()
    assert (cfg.delta_lambda, cfg.delta_warmup, cfg.dropout) == (2.0, 500, 0.0)
    with pytest.raises(ValidationError, match="without dropout"):
        DeltaLoraConfig(dropout=0.1)
    with pytest.raises(DeltatuneError, match=r"method\.dropout: Delta-LoRA trains without dropout"):
        validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "delta_lora", "dropout": 0.05}})
    for bad in ({"delta_lambda": 0}, {"delta_warmup": -1}):
        with pytest.raises(ValidationError):
            DeltaLoraConfig(**bad)


@pytest.mark.parametrize("rslora", [False, True])
def test_one_update_by_hand(base, dataset, rslora):
    """K = 1: step 1 trains only A, B; step t >= 2 adds λ s (B_t A_t - B_{t-1} A_{t-1}) to W;
    the forward is W x + s B A x with the updated W; nothing else of the base moves."""
    lam, r, alpha = 2.0, 4, 8.0
    s = alpha / (r ** 0.5 if rslora else r)
    torch.manual_seed(0)
    model = copy.deepcopy(base)
    installed = core.apply_method(model, _cfg(delta_lambda=lam, delta_warmup=1, rslora=rslora))
    layer = installed.wrappers[Q]
    assert layer.scaling == s
    w_init = layer.base_layer.weight.detach().clone()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad and not n.endswith(".base_layer.weight")}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2), total_steps=4, loss_fn=model_lm_loss)
    assert not any(p is layer.base_layer.weight for g in stepper.optimizer.param_groups for p in g["params"]), \
        "W has no optimiser state: the hook moves it"
    batch = collate(dataset.examples[:4], pad_id=0)
    products, weights = [], []
    for step in range(1, 5):
        stepper.step([batch], step)
        products.append(layer.lora_B.weight.detach() @ layer.lora_A.weight.detach())
        weights.append(layer.base_layer.weight.detach().clone())
        torch.testing.assert_close(layer.lora_A_prev, layer.lora_A.weight.detach(), rtol=0, atol=0)
        torch.testing.assert_close(layer.lora_B_prev, layer.lora_B.weight.detach(), rtol=0, atol=0)
    assert torch.equal(weights[0], w_init), "warm-up step: W unchanged"
    assert products[0].abs().max() > 0, "B trained during the warm-up (B A != 0)"
    torch.testing.assert_close(weights[1], w_init + lam * s * (products[1] - products[0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(weights[2], weights[1] + lam * s * (products[2] - products[1]), rtol=0, atol=1e-6)
    # telescoping: W_4 = W_K + λ s (B_4 A_4 - B_K A_K), K = 1
    torch.testing.assert_close(weights[3], w_init + lam * s * (products[3] - products[0]), rtol=0, atol=1e-6)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), f"{n} moved"

    x = torch.randn(3, layer.base_layer.in_features)
    with torch.no_grad():
        want = x @ weights[3].t() + s * (x @ layer.lora_A.weight.t()) @ layer.lora_B.weight.t()
        torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-5)
    assert installed.hooks.report() == {"base_weight_updates": 3, "delta_lambda": lam, "delta_warmup": 1}


def test_no_update_during_warm_up_and_a_warning_when_it_outlasts_the_run(base, dataset):
    with pytest.warns(UserWarning, match="delta_warmup=3 >= this run's 3 optimiser steps"):
        _, installed = _stepped(base, dataset, steps=3, delta_warmup=3)
    base_weights = dict(base.named_parameters())
    for name, wrapper in installed.wrappers.items():
        assert torch.equal(wrapper.base_layer.weight, base_weights[f"{name}.weight"])
    assert installed.hooks.report()["base_weight_updates"] == 0


def test_switched_off_works_until_trained_then_refuses(base, ids, dataset):
    model = copy.deepcopy(base)
    core.apply_method(model, _cfg(delta_warmup=0))
    with torch.no_grad(), core.switched_off(model):  # the recipe measures the base this way
        torch.testing.assert_close(all_logits(model, ids), all_logits(base, ids), rtol=0, atol=0)
    with pytest.warns(UserWarning, match="never move"):
        trained, _ = _stepped(base, dataset, steps=1, delta_warmup=5)  # only A, B moved: still refused
    with pytest.raises(DeltatuneError, match="no switched-off state"), core.switched_off(trained):
        pass


def test_targets_tied_to_the_embeddings_are_refused(base):
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError, match="lm_head.*tied.*method.targets"):
        core.apply_method(model, _cfg(targets=["q_proj", "lm_head"]))
    with pytest.raises(DeltatuneError, match="no method installed"):
        core.installed_method(model)
    assert not wrappers(model)
    assert all(p.requires_grad for p in model.parameters()), "a refused install leaves the model as it was"


def test_save_load_and_merge(base, ids, dataset, tmp_path, tiny_llama_dir):
    model, installed = _stepped(base, dataset, steps=3, delta_warmup=1)
    cfg = core.installed_method(model)[1]
    out = core.save_adapter(model, cfg, tmp_path / "adapter", tiny_llama_dir)
    meta = json.loads((out / "deltatune_adapter.json").read_text())
    assert (meta["weights"], meta["keys"], meta["method"]["name"]) == ("model.safetensors", "model", "delta_lora")
    saved = load_file(out / "model.safetensors")
    targets = list(installed.wrappers)
    assert len(targets) == 2 * 3
    for name in targets:  # the full trained weight of every target, A, B and the previous A, B
        for key in ("base_layer.weight", "lora_A.weight", "lora_B.weight", "lora_A_prev", "lora_B_prev"):
            assert f"{name}.{key}" in saved
    assert not torch.equal(saved[f"{Q}.base_layer.weight"], dict(base.named_parameters())[f"{Q}.weight"])
    with torch.no_grad():
        want = all_logits(model, ids)
        fresh = copy.deepcopy(base)
        core.load_adapter(fresh, out)
        torch.testing.assert_close(all_logits(fresh, ids), want, rtol=0, atol=0)
        core.merge(fresh)  # W + s B A with the updated W
        torch.testing.assert_close(all_logits(fresh, ids), want, rtol=0, atol=1e-5)
        core.unmerge(fresh)
        plain = core.merge_and_unload(fresh)
        torch.testing.assert_close(all_logits(plain, ids), want, rtol=0, atol=1e-5)
    assert set(plain.state_dict()) == set(base.state_dict())


def test_shared_base_handle_never_writes_the_base(base, ids, dataset, tmp_path, tiny_llama_dir):
    model, _ = _stepped(base, dataset, steps=3, delta_warmup=0)
    core.save_adapter(model, core.installed_method(model)[1], tmp_path / "a", tiny_llama_dir)
    shared = copy.deepcopy(base)
    snapshot = {n: (p.data_ptr(), p.detach().clone()) for n, p in shared.named_parameters()}
    with torch.no_grad():
        base_out, want = all_logits(shared, ids), all_logits(model, ids)
        handle = core.load_adapter_handle(shared, tmp_path / "a")
        torch.testing.assert_close(all_logits(shared, ids), base_out, rtol=0, atol=0)
        for _ in range(2):
            with handle.active() as m:
                torch.testing.assert_close(all_logits(m, ids), want, rtol=0, atol=1e-6)
            torch.testing.assert_close(all_logits(shared, ids), base_out, rtol=0, atol=0)
    for n, p in shared.named_parameters():
        ptr, value = snapshot[n]
        assert p.data_ptr() == ptr and torch.equal(p.detach(), value), f"base {n} was replaced or changed"


# ---------------------------------------------------------------------------------------------
# Resume through the real loop


def _run_cfg(run_dir):
    run_dir.mkdir(parents=True, exist_ok=True)  # what the recipe's prepare_run_dir does
    return validate_config({
        "data": {"train": "unused.jsonl"},
        "method": {"name": "delta_lora", "r": 4, "alpha": 8, "targets": ["q_proj", "v_proj", "down_proj"],
                   "delta_warmup": 2},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "save_every": 3, "keep_checkpoints": 5,
                  "schedule": "cosine", "warmup_steps": 1},
        "output": {"dir": str(run_dir)},
    })


def _train(base, dataset, run_dir, resume_from=None, after_load=None):
    model = copy.deepcopy(base)
    cfg = _run_cfg(run_dir)
    torch.manual_seed(0)
    installed = core.apply_method(model, cfg.method)
    if after_load is not None:  # the control: tamper with the state right after it loads
        real_load = installed.load_state
        installed.load_state = lambda tensors, where: (real_load(tensors, where), after_load(installed))
    train(model, installed, dataset, None, cfg, run_dir, pad_id=0, resume_from=resume_from)
    losses = {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")}
    return losses, {k: v.clone() for k, v in installed.state().items()}


def _cut_after_step_3(full, to):
    shutil.copytree(full, to)
    for ckpt in list_checkpoints(to):
        if ckpt.name != "step-3":
            shutil.rmtree(ckpt)
    return latest_checkpoint(to)


def test_resume_reproduces_the_uninterrupted_run(base, dataset, tmp_path):
    full = tmp_path / "full"
    reference, final = _train(base, dataset, full)
    assert not torch.equal(final[f"{Q}.base_layer.weight"], dict(base.named_parameters())[f"{Q}.weight"])

    cut = tmp_path / "cut"
    resumed, state = _train(base, dataset, cut, resume_from=_cut_after_step_3(full, cut))
    assert sorted(resumed) == list(range(1, 7))
    for step in range(1, 7):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6), (step, resumed, reference)
    assert set(state) == set(final)
    for name, tensor in state.items():
        torch.testing.assert_close(tensor, final[name], rtol=0, atol=1e-6)

    # the control: the same resume with the base weights put back to the pretrained ones diverges
    pretrained = dict(base.named_parameters())

    def reset_base_weights(installed):
        with torch.no_grad():
            for name, wrapper in installed.wrappers.items():
                wrapper.base_layer.weight.copy_(pretrained[f"{name}.weight"])

    lost = tmp_path / "lost"
    diverged, _ = _train(base, dataset, lost, _cut_after_step_3(full, lost), after_load=reset_base_weights)
    assert diverged[4] != pytest.approx(reference[4], abs=1e-6)
