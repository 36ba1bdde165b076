"""AdaLoRA by hand and through the real training loop: the layer's equation, peft's init, the
regulariser, the importance EMA, pruning across layers, the cubic schedule, config errors
before anything moves, adapters without the scores, and --resume reproducing the uninterrupted
run step for step (scores and masks checkpointed). Parity with peft: tests/parity/test_adalora_peft.py.

    .venv/bin/pytest tests/methods/test_adalora.py
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig, load_config, validate_config
from deltatune.data.tokenize import TokenizedDataset
from deltatune.errors import DeltatuneError
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.adalora import AdaLoraConfig, RankAllocator, SVDLinear, scheduled_budget
from deltatune.training.checkpoint import latest_checkpoint, list_checkpoints
from deltatune.training.loop import train
from deltatune.training.metrics import read_metrics
from deltatune.training.step import OptimiserStep


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def dataset():
    gen = torch.Generator().manual_seed(0)
    examples = []
    for i in range(16):
        ids = torch.randint(5, 1000, (6 + i % 4,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100, -100] + ids[2:]})
    return TokenizedDataset(examples)


def _layer(in_features=6, out_features=5, r=3, alpha=6.0, dropout=0.0) -> SVDLinear:
    torch.manual_seed(0)
    return SVDLinear(torch.nn.Linear(in_features, out_features), r=r, alpha=alpha, dropout=dropout)


# ---------------------------------------------------------------------------------------------
# The layer


def test_layer_is_the_papers_equation():
    """h = W0 x + b + alpha / (r + 1e-5) * B (E ⊙ A) dropout(x), by hand, dropout on."""
    layer = _layer(dropout=0.5)
    torch.nn.init.normal_(layer.lora_E)
    x = torch.randn(4, 6)
    torch.manual_seed(1)
    got = layer(x)
    torch.manual_seed(1)
    dropped = torch.nn.functional.dropout(x, 0.5, training=True)
    linear = layer.base_layer
    a, e, b = layer.lora_A, layer.lora_E, layer.lora_B
    want = x @ linear.weight.T + linear.bias + 6.0 / (3 + 1e-5) * dropped @ (e * a).T @ b.T
    torch.testing.assert_close(got, want)
    layer.eval()
    torch.testing.assert_close(layer.delta_weight(), 6.0 / (3 + 1e-5) * b @ torch.diag(e.view(-1)) @ a)


def test_init_is_peft_and_the_model_starts_at_the_base():
    """A, B ~ N(0, 0.02^2), E = 0 (so h = W0 x), ranknum = r, scores zero, nothing pruned."""
    layer = _layer(in_features=256, out_features=512, r=64)
    for p in (layer.lora_A, layer.lora_B):
        assert abs(float(p.detach().std()) - 0.02) < 0.001 and abs(float(p.detach().mean())) < 0.001
    assert not layer.lora_E.any() and layer.ranknum.tolist() == [64.0]
    assert layer.rank_mask.tolist() == [1.0] * 64 and layer.rank == 64
    assert {n for n, _ in layer.named_parameters()} == {"base_layer.weight", "base_layer.bias", "lora_A", "lora_E",
                                                          "lora_B"}
    assert {n for n, _ in layer.named_buffers()} == {
        "ranknum", "rank_mask", *(f"{k}_{p}" for k in ("sensitivity", "uncertainty") for p in "AEB")}
    x = torch.randn(3, 256)
    torch.testing.assert_close(layer(x), layer.base_layer(x), rtol=0, atol=0)


def test_regulariser_by_hand():
    """weight x mean over A, B of ||A A^T - I||_F / ||B^T B - I||_F (peft's normalisation)."""
    one, two = _layer(r=3), _layer(in_features=8, out_features=4, r=2)
    with torch.no_grad():
        one.lora_A.copy_(torch.eye(3, 6))  # orthonormal rows: 0
        one.lora_B.copy_(2 * torch.eye(5, 3))  # B^T B = 4 I: ||3 I||_F = 3 sqrt(3)
        two.lora_A.zero_()  # ||-I||_F = sqrt(2)
        two.lora_B.copy_(torch.eye(4, 2))  # 0
    allocator = RankAllocator(AdaLoraConfig(init_r=3, target_r=2, orth_reg_weight=0.5), {"one": one, "two": two})
    want = 0.5 * (0 + 3 * 3 ** 0.5 + 2 ** 0.5 + 0) / 4
    assert float(allocator.regulariser().detach()) == pytest.approx(want, rel=1e-6)


def test_importance_is_the_smoothed_sensitivity_times_its_uncertainty():
    """Two updates by hand: I = |w g|, Ī = β1 Ī + (1-β1) I, Ū = β2 Ū + (1-β2) |I - Ī|; then
    S_i = s(E_i) + mean_j s(A_ij) + mean_j s(B_ji) with s = Ī Ū."""
    layer = _layer()
    torch.nn.init.normal_(layer.lora_E)
    b1, b2 = 0.8, 0.6
    smooth = {p: torch.zeros_like(getattr(layer, f"lora_{p}")) for p in "AEB"}
    unc = {p: torch.zeros_like(getattr(layer, f"lora_{p}")) for p in "AEB"}
    for _ in range(2):
        for p in "AEB":
            param = getattr(layer, f"lora_{p}")
            param.grad = torch.randn_like(param)
            inst = (param * param.grad).abs().detach()
            smooth[p] = b1 * smooth[p] + (1 - b1) * inst
            unc[p] = b2 * unc[p] + (1 - b2) * (inst - smooth[p]).abs()
        layer.update_importance(b1, b2)
    for p in "AEB":
        torch.testing.assert_close(getattr(layer, f"sensitivity_{p}"), smooth[p])
        torch.testing.assert_close(getattr(layer, f"uncertainty_{p}"), unc[p])
    s = {p: smooth[p] * unc[p] for p in "AEB"}
    want = s["E"].view(-1) + s["A"].mean(dim=1) + s["B"].mean(dim=0)
    torch.testing.assert_close(layer.triplet_scores(), want)


def test_pruning_keeps_the_best_triplets_over_all_layers():
    """Scores 1..6 over two layers of rank 3, budget 4: the two lowest (both in `low`) go; their
    E_i become zero, the mask records it, and a regrown E_i is zeroed again by reapply_mask."""
    low, high = _layer(r=3), _layer(r=3)
    for layer, scores in ((low, [1.0, 5.0, 2.0]), (high, [3.0, 6.0, 4.0])):
        torch.nn.init.normal_(layer.lora_E)
        layer.sensitivity_E.copy_(torch.tensor(scores).view(-1, 1))
        layer.uncertainty_E.fill_(1.0)  # A, B scores stay 0: S_i = s(E_i)
    allocator = RankAllocator(AdaLoraConfig(init_r=3, target_r=2), {"low": low, "high": high})
    e_high = high.lora_E.detach().clone()
    allocator.prune_to(4)
    assert low.rank_mask.tolist() == [0.0, 1.0, 0.0] and high.rank_mask.tolist() == [1.0, 1.0, 1.0]
    assert low.lora_E[0, 0] == 0 and low.lora_E[2, 0] == 0 and low.lora_E[1, 0] != 0
    torch.testing.assert_close(high.lora_E, e_high, rtol=0, atol=0)
    with torch.no_grad():
        low.lora_E.fill_(0.3)  # what the optimiser does to pruned entries between allocations
    low.reapply_mask()
    assert low.lora_E.view(-1).tolist() == pytest.approx([0.0, 0.3, 0.0])
    assert allocator.report()["ranks"] == {"low": 1, "high": 3} and allocator.report()["budget"] == 4
    allocator.prune_to(6)  # the full budget prunes nothing
    assert low.rank == 3


def test_the_budget_schedule_is_cubic_between_the_warm_ups():
    """b0 = 24, bT = 8, tinit 2, tfinal 3, T = 12, every 2 steps: the closed form by hand."""
    want = {1: (24, False), 2: (24, False)}
    for step in range(3, 10):
        left = 1 - (step - 2) / (12 - 3 - 2)
        want[step] = (int(16 * left ** 3 + 8), step % 2 == 0)
    want.update({10: (8, True), 11: (8, True), 12: (8, True)})
    got = {step: scheduled_budget(step, 24, 8, tinit=2, tfinal=3, total=12, delta_t=2) for step in range(1, 13)}
    assert got == want
    # 16 (6/7)^3 + 8 = 18.08, 16 (5/7)^3 + 8 = 13.83, and the budget meets bT at T - tfinal
    assert got[3] == (18, False) and got[4] == (13, True) and got[9] == (8, False)


# ---------------------------------------------------------------------------------------------
# Config and install errors: before anything changes


def _raw(**method):
    return {"data": {"train": "unused.jsonl"}, "method": {"name": "adalora", **method}}


@pytest.mark.parametrize("bad, key", [
    ({"target_r": 16, "init_r": 12}, "target_r"),
    ({"tinit": 40, "tfinal": 60, "total_step": 100}, "tinit"),
    ({"init_r": 0}, "init_r"),
    ({"beta1": 1.0}, "beta1"),
    ({"delta_t": 0}, "delta_t"),
    ({"orth_reg_weight": -0.1}, "orth_reg_weight"),
    ({"rank": 8}, "rank"),
])
def test_bad_config_fails_at_load_naming_the_key(bad, key):
    with pytest.raises(DeltatuneError, match=key):
        validate_config(_raw(**bad))


def test_a_schedule_longer_than_the_run_is_refused_before_a_weight_moves(base):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, AdaLoraConfig(init_r=4, target_r=2, tinit=3, tfinal=3))
    before = {n: t.clone() for n, t in installed.state().items()}
    with pytest.raises(DeltatuneError, match=r"method\.tinit \(3\) \+ method\.tfinal \(3\).* 6 optimiser steps"):
        OptimiserStep(model, installed, TrainConfig(), total_steps=6, loss_fn=model_lm_loss)
    assert all(torch.equal(t, before[n]) for n, t in installed.state().items())
    # method.total_step wins over the run's length (and was checked at config load)
    model2 = copy.deepcopy(base)
    installed2 = core.apply_method(model2, AdaLoraConfig(init_r=4, target_r=2, tinit=3, tfinal=3, total_step=10))
    OptimiserStep(model2, installed2, TrainConfig(), total_steps=6, loss_fn=model_lm_loss)
    assert installed2.hooks.report()["total_step"] == 10


def test_no_run_length_is_a_clear_error(base):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, AdaLoraConfig(init_r=4, target_r=2))
    with pytest.raises(DeltatuneError, match="method.total_step"):
        installed.hooks.after_optimizer_step(1)


def test_init_r_larger_than_a_layer_names_init_r(base):
    model = copy.deepcopy(base)
    with pytest.raises(DeltatuneError, match=r"method\.init_r=40 .*k_proj.*use method\.init_r <= 32"):
        core.apply_method(model, AdaLoraConfig(init_r=40, target_r=8))
    assert all(p.requires_grad for p in model.parameters()), "a failed apply must leave the model as it was"
    with pytest.raises(DeltatuneError, match="method.targets"):
        core.apply_method(copy.deepcopy(base), AdaLoraConfig(targets="q_prj"))


def test_the_ready_yaml_loads():
    cfg = load_config("configs/smollm2/sft_adalora.yaml")
    assert cfg.method.name == "adalora" and cfg.method.target_r <= cfg.method.init_r
    assert cfg.method.tinit + cfg.method.tfinal < 230  # the default run's 230 steps on orgfacts


# ---------------------------------------------------------------------------------------------
# Through the real training loop: hooks, report, checkpoints, resume, adapter files


def _cfg(run_dir, **train_kw):
    run_dir.mkdir(parents=True, exist_ok=True)  # what the recipe's prepare_run_dir does
    return validate_config({
        "data": {"train": "unused.jsonl"},
        # warm-up 1, budget shrinking (pruned every step) at 2-5, final mask at 6, kept at 7-8
        "method": {"name": "adalora", "init_r": 4, "target_r": 2, "alpha": 8, "tinit": 1, "tfinal": 2},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 8, "save_every": 4, "keep_checkpoints": 5,
                  "schedule": "cosine", "warmup_steps": 1, **train_kw},
        "output": {"dir": str(run_dir)},
    })


def _run(base, dataset, run_dir, resume=False):
    model = copy.deepcopy(base)
    cfg = _cfg(run_dir)
    installed = core.apply_method(model, cfg.method)
    train(model, installed, dataset, None, cfg, run_dir, pad_id=0,
          resume_from=latest_checkpoint(run_dir) if resume else None)
    return model, installed


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")}


def _cut_after(src, dst, step):
    shutil.copytree(src, dst)
    for ckpt in list_checkpoints(dst):
        if ckpt.name != f"step-{step}":
            shutil.rmtree(ckpt)


def test_resume_mid_schedule_reproduces_the_uninterrupted_run(base, dataset, tmp_path):
    full = tmp_path / "full"
    _, installed = _run(base, dataset, full)
    reference, final = _losses(full), {k: v.clone() for k, v in installed.state().items()}
    report = installed.hooks.report()
    assert report["budget"] == report["target_budget"] == 2 * 14 and report["init_budget"] == 4 * 14
    assert report["total_step"] == 8 and len(set(report["ranks"].values())) > 1, "ranks were reallocated"
    saved = load_file(str(full / "checkpoints" / "step-4" / "trainable.safetensors"))
    assert any(k.endswith("sensitivity_E") and v.any() for k, v in saved.items()), "scores are checkpointed"
    assert any(k.endswith("rank_mask") and not v.all() for k, v in saved.items()), "masks are checkpointed"

    cut = tmp_path / "cut"  # interrupted after step 4, in the middle of the budget phase
    _cut_after(full, cut, 4)
    _, resumed_installed = _run(base, dataset, cut, resume=True)
    resumed = _losses(cut)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(5, 9):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6), (step, resumed, reference)
    for name, tensor in resumed_installed.state().items():
        torch.testing.assert_close(tensor, final[name], rtol=0, atol=1e-6, msg=name)
    assert resumed_installed.hooks.report() == report


def test_adapter_folder_keeps_the_masks_not_the_scores(base, dataset, tmp_path, tiny_llama_dir):
    model, installed = _run(base, dataset, tmp_path / "run")
    out = core.save_adapter(model, installed_cfg(model), tmp_path / "adapter", tiny_llama_dir)
    keys = set(load_file(str(out / "model.safetensors")))
    assert keys == {k for k in installed.state() if not k.rsplit(".", 1)[-1].startswith(("sensitivity", "uncertainty"))}
    assert any(k.endswith(".rank_mask") for k in keys) and any(k.endswith(".ranknum") for k in keys)
    fresh = copy.deepcopy(base)
    core.load_adapter(fresh, out)
    loaded = core.installed_method(fresh)[2]
    assert loaded.hooks.report()["ranks"] == installed.hooks.report()["ranks"]
    ids = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, model(ids).logits, rtol=0, atol=0)


def installed_cfg(model):
    return core.installed_method(model)[1]


def test_control_a_resume_that_loses_the_scores_allocates_differently(base, dataset, tmp_path):
    """Without the checkpointed Ī / Ū the final allocation (step 6) differs: the scores matter."""
    full = tmp_path / "full"
    _, installed = _run(base, dataset, full)
    lost = tmp_path / "lost"
    _cut_after(full, lost, 4)
    model = copy.deepcopy(base)
    cfg = _cfg(lost)
    lossy = core.apply_method(model, cfg.method)
    real_load = lossy.load_state

    def load_without_scores(tensors, where):
        real_load({k: (torch.zeros_like(v) if k.rsplit(".", 1)[-1].startswith(("sensitivity", "uncertainty"))
                       else v) for k, v in tensors.items()}, where)

    lossy.load_state = load_without_scores
    train(model, lossy, dataset, None, cfg, lost, pad_id=0, resume_from=latest_checkpoint(lost))
    assert lossy.hooks.report()["ranks"] != installed.hooks.report()["ranks"]


def test_the_sft_recipe_writes_the_final_ranks_to_eval_json(tmp_path, tiny_llama_dir, capsys):
    """`method.name: adalora` is all a run needs: the hooks allocate, eval.json has the report."""
    import json

    from deltatune.recipes import sft

    rows = [{"instruction": f"What colour is door {i}?", "input": "", "output": f"Door {i} is {c}."}
            for i, c in enumerate(["red", "blue", "green", "amber"] * 4)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = validate_config({
        "recipe": "sft",
        "model": {"name": str(tiny_llama_dir)},
        "method": {"name": "adalora", "init_r": 4, "target_r": 2, "alpha": 8, "tinit": 1, "tfinal": 1},
        "data": {"train": str(data), "val": str(data), "max_length": 64},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "schedule": "constant", "seed": 0,
                  "num_threads": 1},
        "eval": {"before_after": False},
        "output": {"dir": str(tmp_path / "run")},
    })
    run_dir = sft.run(cfg)
    report = json.loads((run_dir / "eval.json").read_text())["method_report"]
    assert report["budget"] == report["target_budget"] == 2 * 14 and report["total_step"] == 6
    assert sum(report["ranks"].values()) == report["budget"] and len(report["ranks"]) == 14
    assert "method report:" in capsys.readouterr().out
