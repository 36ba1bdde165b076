"""Atomic checkpoints: round trip, pruning, and a crash mid-save leaves the last one usable."""

import random

import pytest
import torch

from deltatune.errors import DeltatuneError
from deltatune.methods.installs import TensorInstall
from deltatune.methods.protocol import InstallContext
from deltatune.training import checkpoint as ck
from deltatune.training.checkpoint import TrainState, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from deltatune.training.rundir import prepare_run_dir


def _inst(model):
    """The method protocol's view of a model whose requires_grad parameters train."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return TensorInstall(model, names, InstallContext())


def _setup():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched


def _step(model, opt, sched):
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = _setup()
    _step(model, opt, sched)
    save_checkpoint(tmp_path, TrainState(step=1, epoch=0, batch_index=3, best_val_loss=1.5, bad_evals=1), _inst(model), opt, sched)
    expect_rand = (random.random(), torch.rand(3))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt, sched)

    model2, opt2, sched2 = _setup()
    state = load_checkpoint(latest_checkpoint(tmp_path), _inst(model2), opt2, sched2)
    assert state == TrainState(step=1, epoch=0, batch_index=3, best_val_loss=1.5, bad_evals=1)
    for name in ("1.weight", "1.bias"):
        assert torch.equal(model2.state_dict()[name], weights[name])
    assert (random.random(), torch.rand(3))[0] == expect_rand[0]
    assert sched2.last_epoch == 1 and opt2.state_dict()["state"][0]["step"] == 1
    assert set(ck.load_file(str(latest_checkpoint(tmp_path) / "trainable.safetensors"))) == {"1.weight", "1.bias"}


def test_rng_restored(tmp_path):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path, TrainState(step=1), _inst(model), opt, sched)
    a = torch.rand(5)
    load_checkpoint(latest_checkpoint(tmp_path), _inst(model))
    assert torch.equal(torch.rand(5), a)


def test_keeps_last_n(tmp_path):
    model, opt, sched = _setup()
    for step in range(1, 5):
        save_checkpoint(tmp_path, TrainState(step=step), _inst(model), opt, sched, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-3", "step-4"]


def test_crash_mid_save_keeps_previous(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path, TrainState(step=1), _inst(model), opt, sched)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt, sched)

    real_save = torch.save

    def crash(obj, path, *a, **kw):
        if str(path).endswith("scheduler.pt"):
            raise OSError("disk full (simulated)")
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, TrainState(step=2), _inst(model), opt, sched)
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path).name == "step-1"  # the half-written one is invisible
    model2, opt2, sched2 = _setup()
    assert load_checkpoint(latest_checkpoint(tmp_path), _inst(model2), opt2, sched2).step == 1
    assert torch.equal(model2.state_dict()["1.weight"], good["1.weight"])
    # the next save cleans the leftover and succeeds
    save_checkpoint(tmp_path, TrainState(step=2), _inst(model), opt, sched)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1", "step-2"]


def test_mismatched_params_is_clear_error(tmp_path):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path, TrainState(step=1), _inst(model), opt, sched)
    other = torch.nn.Linear(4, 4)
    with pytest.raises(DeltatuneError, match="do not fit.*Resume with the config"):
        load_checkpoint(latest_checkpoint(tmp_path), _inst(other))


def test_run_dir_refuses_to_overwrite(tmp_path):
    from deltatune.config import validate_config

    cfg = validate_config({"data": {"train": "x.jsonl"}, "method": {"name": "full"}, "output": {"dir": str(tmp_path / "run")}})
    run = prepare_run_dir(cfg)
    assert (run / "config.yaml").is_file()
    (run / "adapter").mkdir()
    with pytest.raises(DeltatuneError, match="finished run.*--resume"):
        prepare_run_dir(cfg)
    assert prepare_run_dir(cfg, resume=True) == run
