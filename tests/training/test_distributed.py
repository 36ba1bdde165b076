"""Data-parallel training under torchrun (gloo, 2 CPU processes) on the tiny Llama.

The contract (deltatune.training.distributed): the same global batch gives the same loss per
step as one process, whatever the process count; only rank 0 writes; a run resumes with a
different process count; a batch that does not divide over the processes is a clear error.
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


@pytest.fixture
def write_config(tmp_path, tiny_llama_dir):
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


def losses(run_dir: str) -> dict[int, float]:
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"), "train")
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice (more than one writer?): {steps}"
    return {r["step"]: r["loss"] for r in rows}


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("method", [None, {"name": "full"}], ids=["lora", "full"])
def test_two_processes_give_the_single_process_losses(write_config, method):
    one_cfg, one_dir = write_config("one", method)
    two_cfg, two_dir = write_config("two", method)
    ok(launch(one_cfg, 1))
    ok(launch(two_cfg, 2))
    single, double = losses(one_dir), losses(two_dir)
    assert sorted(single) == sorted(double) == list(range(1, 7))
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=LOSS_TOLERANCE), step
    assert single[6] < single[1]  # it trains
    # one writer: one `end` row, the val rows once, the adapter saved
    assert len(read_metrics(os.path.join(two_dir, "metrics.jsonl"), "end")) == 1
    assert [r["step"] for r in read_metrics(os.path.join(two_dir, "metrics.jsonl"), "val")] == [3, 6]
    assert os.path.isdir(os.path.join(two_dir, "adapter"))


def test_grad_accumulation_and_processes_keep_the_global_batch(write_config):
    """batch 4 in one process == batch 2 x accumulation 2 over 2 processes (1 example each)."""
    one_cfg, one_dir = write_config("one")
    two_cfg, two_dir = write_config("two", batch_size=2, grad_accum=2)
    ok(launch(one_cfg, 1, "train.batch_size=2", "train.grad_accum=2"))
    ok(launch(two_cfg, 2))
    single, double = losses(one_dir), losses(two_dir)
    for step in single:
        assert double[step] == pytest.approx(single[step], abs=LOSS_TOLERANCE), step


def test_resume_with_a_different_process_count(write_config):
    """Two processes stop after step 3 (simulated: the later checkpoint removed); one process
    resumes, and steps 4-6 repeat the uninterrupted two-process run's losses."""
    cfg, run_dir = write_config("two", save_every=3)
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
