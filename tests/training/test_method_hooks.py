"""The training building blocks call a method's hooks and keep its buffers: a test-only method
with every hook (extra loss, after-step update of a buffer the forward uses, its own parameter
group) trains through `training.loop.train`, and `--resume` of it reproduces the uninterrupted
run step for step — which it only can if the buffer was checkpointed.

    .venv/bin/pytest tests/training/test_method_hooks.py
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM

from deltatune.config import validate_config
from deltatune.data.tokenize import TokenizedDataset
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.protocol import MethodHooks
from deltatune.training.checkpoint import latest_checkpoint, list_checkpoints
from deltatune.training.loop import train
from deltatune.training.metrics import read_metrics

L2 = 1e-2  # the extra loss: L2 * sum(shift^2)


class GatedShift(nn.Module):
    """h = W0 x + gate * shift, where `gate` is a buffer the after-step hook moves towards
    |shift| (a stand-in for masks and importance scores that methods keep between steps)."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.shift = nn.Parameter(torch.zeros(base_layer.out_features))
        self.register_buffer("gate", torch.ones(base_layer.out_features))

    def forward(self, x):
        return self.base_layer(x) + self.gate * self.shift

    def merge(self):  # not used here; a wrapper of WrapperInstall may be mergeable
        raise NotImplementedError


def install_gated_shift(model) -> WrapperInstall:
    names = [n for n, m in model.named_modules() if n.endswith(("q_proj", "down_proj"))]
    wrappers = {name: GatedShift(model.get_submodule(name)) for name in names}
    model.requires_grad_(False)
    for wrapper in wrappers.values():
        wrapper.shift.requires_grad_(True)
    shifts = [w.shift for w in wrappers.values()]
    calls = []

    def after_step(step):
        calls.append(step)
        for w in wrappers.values():
            w.gate.mul_(0.5).add_(0.5 * (1 + w.shift.abs()))

    hooks = MethodHooks(
        extra_loss=lambda: L2 * sum((s ** 2).sum() for s in shifts),
        after_optimizer_step=after_step,
        param_groups=lambda train_cfg: [{"params": shifts, "lr_ratio": 2.0, "weight_decay": 0.0}],
    )
    installed = WrapperInstall(model, wrappers, hooks)
    installed.calls = calls
    return installed


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def dataset():
    gen = torch.Generator().manual_seed(0)
    examples = []
    for i in range(12):
        ids = torch.randint(5, 1000, (6 + i % 4,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100, -100] + ids[2:]})
    return TokenizedDataset(examples)


def _cfg(run_dir, **train):
    run_dir.mkdir(parents=True, exist_ok=True)  # what the recipe's prepare_run_dir does
    return validate_config({
        "data": {"train": "unused.jsonl"},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "save_every": 3, "keep_checkpoints": 5,
                  "schedule": "cosine", "warmup_steps": 1, **train},
        "output": {"dir": str(run_dir)},
    })


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")}


def test_hooks_run_and_the_param_group_gets_its_lr(base, dataset, tmp_path):
    model = copy.deepcopy(base)
    installed = install_gated_shift(model)
    train(model, installed, dataset, None, _cfg(tmp_path / "r", max_steps=3), tmp_path / "r", pad_id=0)
    assert installed.calls == [1, 2, 3]
    gates = [w.gate for w in installed.wrappers.values()]
    assert all(not torch.equal(g, torch.ones_like(g)) for g in gates), "the after-step hook moved the buffers"
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl", "train")
    # lr logged is group 0's: train.lr x lr_ratio 2 after one warmup step, cosine over 3 steps
    assert rows[0]["lr"] == pytest.approx(2e-2)
    saved = load_file(str(latest_checkpoint(tmp_path / "r") / "trainable.safetensors"))
    assert {k for k in saved if k.endswith(".gate")} and {k for k in saved if k.endswith(".shift")}


def test_extra_loss_is_part_of_the_step_loss(base, dataset, tmp_path):
    """With shifts set to c, the first step's loss is the LM loss + L2 * n * c^2."""
    from deltatune.training.step import OptimiserStep

    model = copy.deepcopy(base)
    installed = install_gated_shift(model)
    with torch.no_grad():
        for w in installed.wrappers.values():
            w.shift.fill_(0.3)
    from deltatune.data.batching import collate
    from deltatune.losses.lm import model_lm_loss

    batch = collate(dataset.examples[:4], 0)
    with torch.no_grad():
        lm, _ = model_lm_loss(model, batch)
    n = sum(w.shift.numel() for w in installed.wrappers.values())
    stepper = OptimiserStep(model, installed, _cfg(tmp_path).train, 1, model_lm_loss)
    loss, _ = stepper.accumulate([batch])
    assert loss == pytest.approx(float(lm) + L2 * n * 0.09, rel=1e-6)


def test_resume_with_buffers_reproduces_the_uninterrupted_run(base, dataset, tmp_path):
    full = tmp_path / "full"
    model = copy.deepcopy(base)
    installed = install_gated_shift(model)
    train(model, installed, dataset, None, _cfg(full), full, pad_id=0)
    reference, final = _losses(full), {k: v.clone() for k, v in installed.state().items()}

    cut = tmp_path / "cut"  # interrupted after the step-3 checkpoint
    shutil.copytree(full, cut)
    for ckpt in list_checkpoints(cut):
        if ckpt.name != "step-3":
            shutil.rmtree(ckpt)
    model2 = copy.deepcopy(base)
    installed2 = install_gated_shift(model2)
    train(model2, installed2, dataset, None, _cfg(cut), cut, pad_id=0, resume_from=latest_checkpoint(cut))
    resumed = _losses(cut)
    assert sorted(resumed) == list(range(1, 7))
    for step in range(4, 7):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6), (step, resumed, reference)
    for name, tensor in installed2.state().items():
        torch.testing.assert_close(tensor, final[name], rtol=0, atol=1e-6)

    # the control: the same resume with the buffers left at their initial value diverges
    model3 = copy.deepcopy(base)
    installed3 = install_gated_shift(model3)
    real_load = installed3.load_state

    def load_without_buffers(tensors, where):
        real_load(tensors, where)
        for w in installed3.wrappers.values():
            w.gate.fill_(1.0)

    installed3.load_state = load_without_buffers
    lost = tmp_path / "lost"
    shutil.copytree(cut, lost)
    for ckpt in list_checkpoints(lost):
        if ckpt.name != "step-3":
            shutil.rmtree(ckpt)
    train(model3, installed3, dataset, None, _cfg(lost), lost, pad_id=0, resume_from=latest_checkpoint(lost))
    assert _losses(lost)[4] != pytest.approx(reference[4], abs=1e-6)
