"""FISH Mask: the empirical Fisher against a per-example reference, the global top-k mask, only
masked entries moving under real AdamW steps (weight decay on), the base untouched, config
errors, and the mask travelling with saved state.

    OMP_NUM_THREADS=1 .venv/bin/pytest tests/methods/test_fishmask.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig
from deltatune.data.batching import collate
from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.fishmask import FishMaskConfig
from deltatune.training.step import OptimiserStep


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def batches():
    """Two right-padded SFT batches (prompt positions masked), 5 examples in all."""
    gen = torch.Generator().manual_seed(3)

    def batch(shapes):
        rows = []
        for length, prompt in shapes:
            tokens = torch.randint(5, 1000, (length,), generator=gen).tolist()
            rows.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
        return collate(rows, pad_id=0)

    return [batch([(9, 3), (6, 2), (8, 5)]), batch([(7, 4), (10, 2)])]


def _reference_fisher(base, batches, limit):
    """(1/N) sum_n (d log p(y_n|x_n) / dW)^2 by plain autograd on the base, one example at a time."""
    model = copy.deepcopy(base)
    weights = {n[: -len(".weight")]: p for n, p in model.named_parameters()
               if n.endswith("_proj.weight")}  # every Linear but the (tied) head
    model.requires_grad_(False)
    for p in weights.values():
        p.requires_grad_(True)
    fisher = {n: torch.zeros_like(p) for n, p in weights.items()}
    used = 0
    for batch in batches:
        for row in range(batch["input_ids"].shape[0]):
            if used == limit:
                break
            example = {k: v[row:row + 1] for k, v in batch.items()}
            mean, tokens = model_lm_loss(model, example)
            grads = torch.autograd.grad(mean * tokens, list(weights.values()))
            for name, g in zip(weights, grads):
                fisher[name] += g.square()
            used += 1
    return {n: f / used for n, f in fisher.items()}


def _effective_weights(installed) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {n: w.base_layer.weight + w.delta_weight() for n, w in installed.wrappers.items()}


def test_fisher_and_mask_match_a_per_example_reference(base, batches):
    model = copy.deepcopy(base)
    cfg = FishMaskConfig(keep_ratio=0.01, num_samples=4)
    installed = core.apply_method(model, cfg)
    summary = installed.prepare(batches)
    assert summary == {"mask": "fisher", "examples": 4, "keep": int(0.01 * 73728)}
    ref = _reference_fisher(base, batches, limit=4)
    from deltatune.methods.fishmask.fisher import estimate_fisher

    ours, used = estimate_fisher(model, installed.wrappers, batches, 4, model_lm_loss)
    assert used == 4 and list(ours) == list(ref)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-12)
    flat = torch.cat([f.flatten() for f in ref.values()])
    want = torch.topk(flat, installed.delta.values.numel()).indices.sort().values
    assert torch.equal(installed.delta.indices, want)
    assert not any(p.grad is not None for p in model.parameters())  # the estimate left no gradient behind
    report = installed.hooks.report()
    assert report["mask"] == "fisher" and sum(m["kept"] for m in report["per_module"].values()) == report["keep"]


def test_training_moves_only_masked_entries(base, batches):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, FishMaskConfig(keep_ratio=0.02, num_samples=5))
    installed.prepare(batches)
    assert installed.trainable() == [installed.delta.values]  # k numbers: AdamW holds nothing else
    before = _effective_weights(installed)
    base_snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if n != "fishmask.values"}
    model.train()
    stepper = OptimiserStep(model, installed, TrainConfig(lr=1e-2, weight_decay=0.5), total_steps=3,
                            loss_fn=model_lm_loss)
    for step in (1, 2, 3):
        stepper.step([batches[0]], step)
    after = _effective_weights(installed)
    offsets = installed.delta.offsets
    changed_positions = []
    for t, name in enumerate(installed.wrappers):
        changed = (after[name] != before[name]).flatten().nonzero().flatten() + offsets[t]
        changed_positions.append(changed)
    changed = torch.cat(changed_positions)
    mask = set(installed.delta.indices.tolist())
    assert len(changed) > 0.9 * len(mask) and set(changed.tolist()) <= mask
    for n, p in model.named_parameters():
        if n in base_snapshot:
            assert torch.equal(p.detach(), base_snapshot[n]), f"base tensor {n} moved"


def test_fisher_mask_refuses_to_train_before_prepare(base, batches):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, FishMaskConfig())
    ids = batches[0]["input_ids"]
    with torch.no_grad():  # evaluation before the mask exists is the base
        torch.testing.assert_close(all_logits(model, ids), all_logits(base, ids), rtol=0, atol=0)
    model.train()
    with pytest.raises(DeltatuneError, match="prepare"):
        model_lm_loss(model, batches[0])
    assert installed.hooks.report()["mask"] == "none"


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_keep_ratio_outside_zero_one_is_a_config_error(ratio):
    with pytest.raises(ValidationError, match="keep_ratio"):
        FishMaskConfig(keep_ratio=ratio)


def test_keep_ratio_one_and_too_small(base):
    installed = core.apply_method(copy.deepcopy(base), FishMaskConfig(keep_ratio=1.0, mask="random"))
    assert installed.delta.values.numel() == installed.delta.total == 73728
    with pytest.raises(DeltatuneError, match="method.keep_ratio"):
        core.apply_method(copy.deepcopy(base), FishMaskConfig(keep_ratio=1e-6))


def test_mask_is_saved_and_bad_masks_are_refused(base, batches, tmp_path, tiny_llama_dir):
    model = copy.deepcopy(base)
    cfg = FishMaskConfig(keep_ratio=0.01, num_samples=5)
    installed = core.apply_method(model, cfg)
    installed.prepare(batches)
    with torch.no_grad():
        installed.delta.values.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    core.save_adapter(model, cfg, tmp_path / "a", tiny_llama_dir)
    fresh = copy.deepcopy(base)
    core.load_adapter(fresh, tmp_path / "a")
    loaded = core.installed_method(fresh)[2]
    assert torch.equal(loaded.delta.indices, installed.delta.indices)
    assert loaded.hooks.report()["per_module"] == installed.hooks.report()["per_module"]
    state = dict(installed.state())
    state["fishmask.indices"] = torch.zeros_like(state["fishmask.indices"])  # repeated positions
    with pytest.raises(DeltatuneError, match="bad.safetensors.*distinct"):
        loaded.load_state(state, "bad.safetensors")
    assert torch.equal(loaded.delta.indices, installed.delta.indices)  # refused before anything changed
