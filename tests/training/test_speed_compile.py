"""train.compile: the decoder layers are compiled on a warm-up batch (compile time reported),
give the eager loss and gradients (atol 1e-5), and a compile failure leaves the eager layers
with a one-line message instead of a crash.

The compiling test uses dynamo's `eager` backend (traces and runs the captured graphs without
generating code: seconds, no C++ toolchain); inductor itself took 81 s for the tiny model on
the shared 2-core machine, too long for the suite."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from deltatune.config import TrainConfig
from deltatune.data.batching import collate
from deltatune.data.packing import collate_packed
from deltatune.losses.lm import model_lm_loss
from deltatune.methods import core
from deltatune.methods.registry import METHODS
from deltatune.training import speed

TOL = 1e-5


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)


def _lora(base):
    model = copy.deepcopy(base)
    torch.manual_seed(1)
    core.apply_method(model, METHODS["lora"].config_cls(name="lora", r=4, alpha=8, targets="all-linear"))
    with torch.no_grad():
        for p in core.installed_method(model)[2].trainable():
            p.add_(0.05 * torch.randn_like(p))
    return model.train()


def _examples():
    gen = torch.Generator().manual_seed(3)
    out = []
    for length, prompt in ((10, 3), (6, 2), (8, 4)):
        ids = torch.randint(5, 1000, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def _run(model, batch):
    model.zero_grad(set_to_none=True)
    loss, _ = model_lm_loss(model, batch)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], atol=TOL, rtol=0)
    assert a[1].keys() == b[1].keys() and a[1]
    for k in a[1]:
        torch.testing.assert_close(a[1][k], b[1][k], atol=TOL, rtol=0, msg=k)


def test_compiled_layers_same_loss_and_grads(base, monkeypatch):
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="eager", **kw))
    torch.compiler.reset()
    model = _lora(base)
    batch = collate(_examples(), 0)
    eager = _run(model, batch)
    model.zero_grad(set_to_none=True)
    state = torch.get_rng_state()
    report = speed.prepare_for_training(model, TrainConfig(compile=True, packing=True))
    assert report["compile_seconds"] > 0 and "attention" in report
    assert torch.equal(torch.get_rng_state(), state)  # the warm-up drew no numbers from the run's stream
    assert all(p.grad is None for p in model.parameters())  # nor left gradients behind
    assert all("forward" in vars(layer) for layer in model.get_decoder().layers)
    _assert_same(_run(model, batch), eager)
    _assert_same(_run(model, collate_packed(_examples())), eager)
    assert not any("_orig_mod" in name for name in model.state_dict())  # checkpoints keep their names
    torch.compiler.reset()


@pytest.mark.parametrize("when", ["at torch.compile", "at the first call"])
def test_compile_failure_falls_back_to_eager(base, monkeypatch, capsys, when):
    """Forced failures: torch.compile raising, or the compiled function failing when first run
    (where a missing C++ compiler shows up)."""
    def broken_compile(fn, **kw):
        if when == "at torch.compile":
            raise RuntimeError("no backend today\nsecond line of the error")

        def compiled(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _lora(base)
    batch = collate(_examples(), 0)
    eager = _run(model, batch)
    report = speed.prepare_for_training(model, TrainConfig(compile=True))
    assert report["compile"] == "failed" and "RuntimeError" in report["compile_error"]
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if "train.compile" in line]
    assert len(lines) == 1 and "training runs eagerly" in lines[0] and "second line" not in lines[0]
    assert not any("forward" in vars(layer) for layer in model.get_decoder().layers)  # eager layers back
    _assert_same(_run(model, batch), eager)
