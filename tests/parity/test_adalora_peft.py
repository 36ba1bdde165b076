"""Our AdaLoRA against HF `peft`'s (the reference): the same A, E, B trained on the same batches
give the same logits, the same orthogonality regulariser, the same importance scores and the
same pruned ranks at every step — ours driven only by its hooks inside `OptimiserStep`, peft's
by the hand-written `update_and_allocate(step)` after each `optimizer.step()`.

    .venv/bin/pytest tests/parity/test_adalora_peft.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

peft = pytest.importorskip("peft")

from deltatune.config import TrainConfig  # noqa: E402
from deltatune.data.batching import collate  # noqa: E402
from deltatune.methods import core  # noqa: E402
from deltatune.methods.adalora import AdaLoraConfig  # noqa: E402
from deltatune.training.step import OptimiserStep, labelled_tokens  # noqa: E402

# fp32 on the CPU. Measured: parameters, logits, losses and scores are bit-identical at every
# step (the same operations in the same order); the tolerances leave room for another BLAS only.
TOL = dict(rtol=0, atol=1e-6)
SCORE_TOL = dict(rtol=1e-5, atol=1e-12)  # Ī, Ū are products of small numbers (|w * grad| ~ 1e-4)
MERGE_TOL = dict(rtol=0, atol=1e-5)  # the update folded into W0: fp32 rounding of W0 + ΔW
STEPS = 8
# warm-up 1 step, budget phase steps 2-5 (pruned at 2 and 4), final mask at 6, kept at 7-8
SCHEDULE = dict(init_r=4, target_r=2, tinit=1, tfinal=2, beta1=0.85, beta2=0.85, orth_reg_weight=0.5)


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def batches():
    """STEPS right-padded SFT batches of 3 examples (prompt positions masked)."""
    gen = torch.Generator().manual_seed(7)
    out = []
    for _ in range(STEPS):
        examples = []
        for _ in range(3):
            length = int(torch.randint(6, 12, (1,), generator=gen))
            tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
            examples.append({"input_ids": tokens, "labels": [-100] * 3 + tokens[3:]})
        out.append(collate(examples, pad_id=0))
    return out


def _peft_name(ours: str) -> str:
    return f"{ours}.default"


def hf_loss(model, batch):
    """The transformers causal-LM loss (what peft's forward adds its regulariser to)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    return out.loss, labelled_tokens(batch)


def _models(base, targets):
    ours = copy.deepcopy(base)
    installed = core.apply_method(ours, AdaLoraConfig(alpha=8, delta_t=2, targets=targets, **SCHEDULE))
    ref_cfg = peft.AdaLoraConfig(
        lora_alpha=8, deltaT=2, total_step=STEPS, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM",
        **SCHEDULE)
    ref = peft.get_peft_model(copy.deepcopy(base), ref_cfg)
    gen = torch.Generator().manual_seed(3)
    ours_params = {n: p for n, p in ours.named_parameters() if p.requires_grad}
    ref_params = {n: p for n, p in ref.base_model.model.named_parameters() if p.requires_grad}
    assert {_peft_name(n) for n in ours_params} == set(ref_params)
    with torch.no_grad():
        for n, p in ours_params.items():
            if n.endswith("lora_E"):  # E starts at zero: give A and B gradients from step 1
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            ref_params[_peft_name(n)].copy_(p)
    return ours, installed, ref, ours_params, ref_params


@pytest.mark.parametrize("targets", [["q_proj", "v_proj", "down_proj"], "all-linear"])
def test_training_steps_match_peft(base, batches, targets):
    ours, installed, ref, ours_params, ref_params = _models(base, targets)
    ours.train(), ref.train()
    train_cfg = TrainConfig(lr=1e-2, schedule="constant", max_grad_norm=None)
    stepper = OptimiserStep(ours, installed, train_cfg, total_steps=STEPS, loss_fn=hf_loss)
    # the kernel training uses (fused where it applies): the parity is the method's, not AdamW's
    # kernels' (fused and for-each differ by ~1 ulp, which AdaLoRA's pruning compounds)
    ref_opt = torch.optim.AdamW(list(ref_params.values()), lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0,
                                fused=stepper.optimizer.defaults["fused"])
    allocator = ref.base_model.rankallocator
    layers = installed.wrappers
    pruned_seen = False
    for step, batch in enumerate(batches, start=1):
        with torch.no_grad():  # the regulariser: peft's loss minus the plain model's loss
            ref_reg = ref(**batch).loss - ref.base_model.model(**batch).loss
            torch.testing.assert_close(installed.hooks.extra_loss(), ref_reg, rtol=0, atol=1e-6)
        result = stepper.step([batch], step)

        ref_loss = ref(**batch).loss
        ref_loss.backward()
        ref_opt.step()
        ref.base_model.update_and_allocate(step)
        ref_opt.zero_grad(set_to_none=True)
        assert result.loss == pytest.approx(ref_loss.item(), abs=1e-6), step

        for n, p in ours_params.items():
            torch.testing.assert_close(p, ref_params[_peft_name(n)], **TOL, msg=f"{n} at step {step}")
        with torch.no_grad():
            torch.testing.assert_close(ours(batch["input_ids"]).logits, ref(input_ids=batch["input_ids"]).logits,
                                       **TOL)
        for name, layer in layers.items():
            for part in "AEB":
                key = _peft_name(f"{name}.lora_{part}")
                if allocator.exp_avg_ipt:  # peft drops its scores once the final mask is fixed (step 6)
                    torch.testing.assert_close(getattr(layer, f"sensitivity_{part}"), allocator.exp_avg_ipt[key],
                                               **SCORE_TOL)
                    torch.testing.assert_close(getattr(layer, f"uncertainty_{part}"), allocator.exp_avg_unc[key],
                                               **SCORE_TOL)
                else:
                    assert step >= 6 and not getattr(layer, f"sensitivity_{part}").any()
            pattern = ref.peft_config["default"].rank_pattern
            if pattern is not None:  # peft's last allocation == our rank mask, triplet for triplet
                assert layer.rank_mask.bool().tolist() == pattern[_peft_name(f"{name}.lora_E")], (name, step)
                pruned_seen = pruned_seen or layer.rank < layer.r
    assert pruned_seen
    report = installed.hooks.report()
    assert report["budget"] == report["target_budget"] == 2 * len(layers)
    assert sum(sum(p) for p in ref.peft_config["default"].rank_pattern.values()) == report["budget"]
    assert report["total_step"] == STEPS


def test_budget_schedule_is_peft_budget_schedule(base):
    """Our schedule function against peft's `budget_schedule` over a longer run, every step."""
    from deltatune.methods.adalora import scheduled_budget

    ours, installed, ref, _, _ = _models(base, ["q_proj", "v_proj"])
    allocator = ref.base_model.rankallocator
    cfg = allocator.peft_config
    cfg.tinit, cfg.tfinal, cfg.deltaT, cfg.total_step = 10, 30, 5, 100
    for step in range(1, 101):
        want = allocator.budget_schedule(step)
        assert scheduled_budget(step, allocator.init_bgt, allocator.target_bgt, 10, 30, 100, 5) == want, step


def test_delta_weight_and_merge_match_peft(base, batches):
    ours, installed, ref, ours_params, ref_params = _models(base, "all-linear")
    ref_layers = dict(ref.base_model.model.named_modules())
    ids = batches[0]["input_ids"]
    with torch.no_grad():
        want = ours(ids).logits
        for name, layer in installed.wrappers.items():
            torch.testing.assert_close(layer.delta_weight(), ref_layers[name].get_delta_weight("default"), **TOL)
        core.merge(ours)
        ref.merge_adapter()
        torch.testing.assert_close(ours(ids).logits, want, **MERGE_TOL)
        torch.testing.assert_close(ref(input_ids=ids).logits, want, **MERGE_TOL)
