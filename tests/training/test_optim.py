"""Schedules against hand-computed values; weight-decay groups."""

import math

import pytest
import torch

from deltatune.config import TrainConfig
from deltatune.training.optim import build_optimizer, build_scheduler


def _lrs(schedule, warmup, total):
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, schedule, warmup, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_with_warmup():
    assert _lrs("constant", 2, 5) == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0])


def test_linear_with_warmup():
    # after warmup W=2 of N=10: 1 - (s-2)/8
    assert _lrs("linear", 2, 10) == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])


def test_cosine_no_warmup():
    want = [0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]  # 1, .854, .5, .146
    assert _lrs("cosine", 0, 4) == pytest.approx(want)
    assert want[2] == pytest.approx(0.5)


def test_no_decay_on_bias_and_norm():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    model[0].weight.requires_grad_(True)
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1, lr=1e-3))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and [p.shape for p in decay["params"]] == [torch.Size([3, 3])]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3  # bias, ln weight, ln bias


def test_only_trainable_params():
    model = torch.nn.Linear(3, 3)
    model.bias.requires_grad_(False)
    opt = build_optimizer(model, TrainConfig())
    assert sum(len(g["params"]) for g in opt.param_groups) == 1


def test_fused_adamw_gives_the_default_kernels_update_and_marks_the_change():
    """CPU fp32 parameters get torch's fused AdamW: the same weights as the default kernel after
    20 steps (to fp32 rounding), and every parameter's in-place version counter moves, which
    the fused kernel alone does not do (methods read it to know whether training touched a
    tensor; SAID caches its projection on it)."""
    torch.manual_seed(0)
    start = [torch.randn(16, 8), torch.randn(16)]
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    results = []
    for fused in (True, False):
        model = torch.nn.Sequential(torch.nn.Linear(8, 16))
        with torch.no_grad():
            model[0].weight.copy_(start[0]), model[0].bias.copy_(start[1])
        if fused:
            optimizer = build_optimizer(model, cfg)
        else:  # the same two groups through the default (for-loop) kernel
            groups = [{"params": [model[0].weight], "weight_decay": 0.1}, {"params": [model[0].bias], "weight_decay": 0.0}]
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), foreach=False)
        assert bool(optimizer.defaults["fused"]) is fused
        generator = torch.Generator().manual_seed(1)
        for _ in range(20):
            before = [p._version for p in model.parameters()]
            model(torch.randn(4, 8, generator=generator)).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            assert all(p._version > v for p, v in zip(model.parameters(), before))
        results.append([p.detach().clone() for p in model.parameters()])
    for fused_p, plain_p in zip(*results):
        torch.testing.assert_close(fused_p, plain_p, rtol=0, atol=1e-6)
