"""Data-parallel training under torchrun (gloo, 2 CPU processes) on the tiny Llama.

The contract (deltatune.training.distributed, deltatune.training.fsdp): the same global batch
gives the same loss per step and the same weights as one process, whatever the process count and
whether the blocks are replicated (ddp) or sharded (fsdp); only rank 0 writes; a run resumes with
a different process count; a batch that does not divide over the processes, or a method fsdp
cannot shard, is a clear error.
Every launch is a real `torchrun -m deltatune train CONFIG` with one thread per process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from deltatune.training.checkpoint import list_checkpoints
from deltatune.training.metrics import read_metrics

LOSS_TOLERANCE = 1e-4  # fp32; the shards pad to their own lengths, so sums run in another order


def write_jsonl(path, n: int, seed: int) -> str:
    """`n` alpaca rows of varied lengths (so the shards of a batch pad differently)."""
    import random

    rng = random.Random(seed)
    rows = [{"instruction": f"What colour is door {i}? " + "please " * rng.randint(0, 6), "input": "",
             "output": f"Door {i} is {rng.choice(['red', 'blue', 'green', 'amber'])}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def write_config(tmp_path_factory, tiny_llama_dir):
    """`write(run, method, **train) -> (config path, run dir)`; run names are unique per test."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    train_file = write_jsonl(tmp_path / "train.jsonl", 24, seed=0)
    val_file = write_jsonl(tmp_path / "val.jsonl", 6, seed=1)

    def write(run: str, method=None, **train) -> tuple[str, str]:
        raw = {
            "recipe": "sft",
            "model": {"name": str(tiny_llama_dir), "device": "cpu"},
            "method": method or {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
            "data": {"train": train_file, "val": val_file, "max_length": 64},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "schedule": "constant", "eval_every": 3,
                      "seed": 0, "num_threads": 1, **train},
            "eval": {"before_after": False},
            "output": {"dir": str(tmp_path / run)},
        }
        path = tmp_path / f"{run}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path), str(tmp_path / run)

    return write


def launch(config: str, processes: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DELTATUNE_PROGRESS": "0"}
    if processes == 1:
        cmd = [sys.executable, "-m", "deltatune", "train", config, *extra]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "deltatune", "train", config, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def losses(run_dir: str, field: str = "loss") -> dict[int, float]:
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"), "train")
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice (more than one writer?): {steps}"
    return {r["step"]: r[field] for r in rows}


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


FULL = {"name": "full"}


@pytest.fixture(scope="module")
def single_process_run(write_config):
    """`run(method) -> run dir` of the one-process reference, trained once per method."""
    done: dict[str, str] = {}

    def run(method=None) -> str:
        name = (method or {}).get("name", "lora")
        if name not in done:
            cfg, run_dir = write_config(f"one-{name}", method)
            ok(launch(cfg, 1))
            done[name] = run_dir
        return done[name]

    return run


@pytest.mark.parametrize("engine,method", [("ddp", None), ("fsdp", None), ("fsdp", FULL)],
                         ids=["ddp-lora", "fsdp-lora", "fsdp-full"])
def test_two_processes_give_the_single_process_losses(write_config, single_process_run, engine, method):
    one_dir = single_process_run(method)
    two_cfg, two_dir = write_config(f"two-{engine}-{(method or {}).get('name', 'lora')}", method, distributed=engine)
    ok(launch(two_cfg, 2))
    single, double = losses(one_dir), losses(two_dir)
    assert sorted(single) == sorted(double) == list(range(1, 7))
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=LOSS_TOLERANCE), step
    # the gradient itself, not only the loss: AdamW hides a gradient scaled by a constant (a
    # mean where a sum belongs), the norm before clipping does not
    single_norm, double_norm = losses(one_dir, "grad_norm"), losses(two_dir, "grad_norm")
    for step in single_norm:
        assert double_norm[step] == pytest.approx(single_norm[step], rel=1e-4), step
    assert single[6] < single[1]  # it trains
    # one writer: one `end` row, the val rows once, the adapter saved
    assert len(read_metrics(os.path.join(two_dir, "metrics.jsonl"), "end")) == 1
    val_one, val_two = (read_metrics(os.path.join(d, "metrics.jsonl"), "val") for d in (one_dir, two_dir))
    assert [r["step"] for r in val_two] == [3, 6]
    # ddp splits the validation set over the processes, fsdp measures it whole on each: same loss
    for a, b in zip(val_one, val_two):
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=LOSS_TOLERANCE), (a, b)
    assert os.path.isdir(os.path.join(two_dir, "adapter"))
    # the run's saved weights are the single process's (gathered from the shards under fsdp)
    assert_same_weights(one_dir, two_dir)
    if engine == "fsdp":  # each process really held half of the blocks' weights
        [row] = read_metrics(os.path.join(two_dir, "metrics.jsonl"), "sharding")
        assert row["processes"] == 2 and row["units"] == 2
        assert row["block_parameters_this_process"] == pytest.approx(row["block_parameters"] / 2, rel=0.01)
        assert row["parameters_this_process"] < row["parameters"]


def assert_same_weights(one_dir: str, two_dir: str, atol: float = 1e-3) -> None:
    """The last checkpoints' trainable tensors match by name, shape and value (6 AdamW steps of
    lr 1e-2: a 1e-6 difference in a near-zero gradient moves a weight by up to ~1e-4 per step)."""
    from safetensors.torch import load_file

    one = load_file(str(list_checkpoints(one_dir)[-1] / "trainable.safetensors"))
    two = load_file(str(list_checkpoints(two_dir)[-1] / "trainable.safetensors"))
    assert sorted(one) == sorted(two)
    for name in one:
        assert one[name].shape == two[name].shape, name
        assert (one[name] - two[name]).abs().max() <= atol, name


def test_grad_accumulation_and_processes_keep_the_global_batch(write_config):
    """batch 4 in one process == batch 2 x accumulation 2 over 2 processes (1 example each)."""
    one_cfg, one_dir = write_config("one-accum")
    two_cfg, two_dir = write_config("two-accum", batch_size=2, grad_accum=2)
    ok(launch(one_cfg, 1, "train.batch_size=2", "train.grad_accum=2"))
    ok(launch(two_cfg, 2))
    single, double = losses(one_dir), losses(two_dir)
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=LOSS_TOLERANCE), step


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_resume_with_a_different_process_count(write_config, engine):
    """Two processes stop after step 3 (simulated: the later checkpoint removed); one process
    resumes, and steps 4-6 repeat the uninterrupted two-process run's losses (under fsdp the
    optimiser state was gathered from the shards into the one-process layout)."""
    cfg, run_dir = write_config(f"resume-{engine}", save_every=3, distributed=engine)
    ok(launch(cfg, 2))
    full_run = losses(run_dir)
    kept = list_checkpoints(run_dir)
    assert [p.name for p in kept] == ["step-3", "step-6"]
    shutil.rmtree(kept[-1])
    shutil.rmtree(os.path.join(run_dir, "adapter"))
    ok(launch(cfg, 1, "--resume"))
    resumed = losses(run_dir)
    assert sorted(resumed) == list(range(1, 7))
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(full_run[step], abs=LOSS_TOLERANCE), step
    resume_rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"), "resume")
    assert [r["step"] for r in resume_rows] == [3]


def test_a_batch_that_does_not_divide_is_a_clear_error(write_config):
    cfg, run_dir = write_config("odd", batch_size=3)
    proc = launch(cfg, 2)
    assert proc.returncode != 0
    assert "train.batch_size 3 does not divide over 2 processes" in proc.stderr
    assert not list_checkpoints(run_dir)


def test_fsdp_refuses_a_method_that_updates_whole_weights(write_config):
    cfg, run_dir = write_config("delta", {"name": "delta_lora", "r": 4, "alpha": 8, "targets": "all-linear"},
                                distributed="fsdp")
    proc = launch(cfg, 2)
    assert proc.returncode != 0
    assert "train.distributed=fsdp: method 'delta_lora'" in proc.stderr and "use train.distributed=ddp" in proc.stderr
    assert not list_checkpoints(run_dir)
