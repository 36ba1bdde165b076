"""LoRA+ (`train.lr_ratio_b`, deltatune.methods.lora.plus) and the LoRA family's config checks.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/methods/test_lora_plus.py

With the ratio, every B matrix trains at ratio x the lr of the A matrices, at every step of the
schedule and after a resume (`OptimiserStep.set_base_lr`); without it the hook's groups are
the optimiser's default split, bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig, validate_config
from deltatune.data.batching import collate
from deltatune.errors import DeltatuneError
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.lora import LoraConfig
from deltatune.methods.modules import wrappers
from deltatune.training.step import OptimiserStep

RATIO = 16


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(4)
    examples = []
    for length, prompt in ((11, 4), (7, 3), (9, 5)):
        tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
        examples.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
    return collate(examples, pad_id=0)


def _lora(base, seed=0):
    """LoRA r=4 on a copy of the base, B moved off zero (the same draws for the same seed)."""
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    installed = core.apply_method(model, LoraConfig(r=4, alpha=8))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for w in installed.wrappers.values():
            w.lora_B.weight.copy_(0.05 * torch.randn(w.lora_B.weight.shape, generator=gen))
    return model.train(), installed


def _lrs_of_a_and_b(stepper, installed) -> tuple[float, float]:
    """(lr of the group holding every A, lr of the group holding every B); each set in one group."""
    a_ids = {id(w.lora_A.weight) for w in installed.wrappers.values()}
    b_ids = {id(w.lora_B.weight) for w in installed.wrappers.values()}
    found = {}
    for group in stepper.optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        for kind, want in (("A", a_ids), ("B", b_ids)):
            if ids & want:
                assert want <= ids, f"the {kind} matrices are split over several groups"
                found[kind] = group["lr"]
    return found["A"], found["B"]


def test_b_group_trains_at_ratio_times_a_through_the_schedule_and_a_resume(base, batch):
    model, installed = _lora(base)
    cfg = TrainConfig(lr=1e-3, lr_ratio_b=RATIO, schedule="cosine", warmup_steps=2)
    stepper = OptimiserStep(model, installed, cfg, total_steps=6, loss_fn=model_lm_loss)
    seen = []
    for step in range(1, 5):
        lr_a, lr_b = _lrs_of_a_and_b(stepper, installed)
        assert lr_b == pytest.approx(RATIO * lr_a) and lr_a > 0
        seen.append(lr_a)
        stepper.step([batch], step)
    assert len(set(seen)) == 3, seen  # warm-up 0.5, 1; cosine 1, 0.85...: the lr did move
    uninterrupted = _lrs_of_a_and_b(stepper, installed)

    # resume: a new stepper, the saved optimiser + scheduler state, then the configured lr
    resumed = OptimiserStep(model, installed, cfg, total_steps=6, loss_fn=model_lm_loss)
    resumed.optimizer.load_state_dict(stepper.optimizer.state_dict())
    resumed.scheduler.load_state_dict(stepper.scheduler.state_dict())
    resumed.set_base_lr(cfg.lr, 4)
    assert _lrs_of_a_and_b(resumed, installed) == pytest.approx(uninterrupted)
    resumed.set_base_lr(cfg.lr / 10, 4)  # a lowered lr after a NaN stop keeps the ratio
    lr_a, lr_b = _lrs_of_a_and_b(resumed, installed)
    assert lr_a == pytest.approx(uninterrupted[0] / 10) and lr_b == pytest.approx(RATIO * lr_a)


def test_without_the_ratio_the_hook_reproduces_the_default_split(base, batch):
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, schedule="linear")
    runs = []
    for use_hook in (True, False):
        model, installed = _lora(base)
        if not use_hook:  # the optimiser's own decay / no-decay split over the model
            installed.hooks = dataclasses.replace(installed.hooks, param_groups=None)
        stepper = OptimiserStep(model, installed, cfg, total_steps=3, loss_fn=model_lm_loss)
        for step in (1, 2, 3):
            stepper.step([batch], step)
        runs.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    with_hook, without = runs
    assert set(with_hook) == set(without)
    for name, tensor in with_hook.items():
        assert torch.equal(tensor, without[name]), name


@pytest.mark.parametrize("bad", [0, -1, -0.5])
def test_non_positive_ratio_names_the_key(bad):
    with pytest.raises(DeltatuneError, match=r"train\.lr_ratio_b"):
        validate_config({"data": {"train": "x.jsonl"}, "train": {"lr_ratio_b": bad}})


def test_ratio_with_a_method_without_b_matrices_is_refused():
    with pytest.raises(DeltatuneError, match=r"train\.lr_ratio_b \(LoRA\+\).*'ia3'.*LoRA-family method"):
        validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "ia3"}, "train": {"lr_ratio_b": 16}})
    for name in ("lora", "lora_fa"):
        cfg = validate_config({"data": {"train": "x.jsonl"}, "method": {"name": name}, "train": {"lr_ratio_b": 16}})
        assert cfg.train.lr_ratio_b == 16


def test_rank_larger_than_a_layer_is_refused_at_install(base):
    model = copy.deepcopy(base)
    # k_proj maps 64 -> 32 (2 KV heads of 16): rank 33 cannot fit
    with pytest.raises(DeltatuneError, match=r"method\.r=33 is larger than model\.layers\.0\.self_attn\.k_proj"):
        core.apply_method(model, LoraConfig(r=33, targets="all-linear"))
    assert not wrappers(model) and all(p.requires_grad for p in model.parameters()), "model left as it was"
