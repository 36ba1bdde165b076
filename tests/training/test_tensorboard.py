"""`logging.tensorboard: true`: every number of metrics.jsonl is also a TensorBoard scalar in
RUN_DIR/tensorboard/ (read back with TensorBoard's own EventAccumulator); a resume purges the
redone steps; without the package the config says how to install it."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from deltatune.config import validate_config
from deltatune.errors import DeltatuneError
from deltatune.training.metrics import MetricsLog, read_metrics

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard stores scalars as float32


def _alpaca(path: Path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    rows = [{"instruction": f"What colour is door {i}?", "input": "",
             "output": f"Door {i} is {rng.choice(['red', 'blue', 'teal'])}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_tiny_sft_run_mirrors_metrics_jsonl(tmp_path, tiny_llama_dir):
    from deltatune.recipes import sft

    cfg = validate_config({
        "recipe": "sft", "model": {"name": str(tiny_llama_dir)},
        "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
        "data": {"train": _alpaca(tmp_path / "train.jsonl", 16, 0), "val": _alpaca(tmp_path / "val.jsonl", 4, 1),
                 "max_length": 48},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 4, "eval_every": 2, "schedule": "linear",
                  "seed": 0, "num_threads": 1},
        "eval": {"before_after": False}, "logging": {"tensorboard": True}, "output": {"dir": str(tmp_path / "run")},
    })
    run_dir = sft.run(cfg)
    got = scalars(run_dir)
    train, val = read_metrics(run_dir / "metrics.jsonl", "train"), read_metrics(run_dir / "metrics.jsonl", "val")
    assert len(train) == 4 and len(val) == 2
    assert got["train/loss"] == [(r["step"], f32(r["loss"])) for r in train]
    assert got["train/lr"] == [(r["step"], f32(r["lr"])) for r in train]
    assert got["train/tokens_per_s"] == [(r["step"], f32(r["tokens_per_s"])) for r in train]
    assert got["val/val_loss"] == [(r["step"], f32(r["val_loss"])) for r in val]
    [end] = read_metrics(run_dir / "metrics.jsonl", "end")
    assert got["end/peak_rss_mib"] == [(end["step"], f32(end["peak_rss_mib"]))]
    assert not any(tag.endswith(("/time", "/step")) for tag in got)  # the axes, not scalars


def test_resume_purges_the_redone_steps(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard=True)
    for step in (1, 2, 3, 4):
        log.write("train", step=step, loss=10.0 + step, note="text is skipped", flag=True, usage={"mib": 5})
    log.close()
    resumed = MetricsLog(tmp_path / "metrics.jsonl", tensorboard=True)  # a new process after a crash at step 4
    resumed.truncate_after(2)
    for step in (3, 4):
        resumed.write("train", step=step, loss=float(step))
    resumed.write("end", step=4)
    got = scalars(tmp_path)
    assert got["train/loss"] == [(1, 11.0), (2, 12.0), (3, 3.0), (4, 4.0)]
    assert [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [11.0, 12.0, 3.0, 4.0]
    assert got["train/usage/mib"] == [(1, 5.0), (2, 5.0)]  # nested numbers, flattened
    assert "train/note" not in got and "train/flag" not in got


def test_other_ranks_and_the_default_write_no_event_files(tmp_path):
    MetricsLog(tmp_path / "a" / "metrics.jsonl", enabled=False, tensorboard=True).write("train", step=1, loss=1.0)
    (tmp_path / "b").mkdir()
    MetricsLog(tmp_path / "b" / "metrics.jsonl").write("train", step=1, loss=1.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "tensorboard").exists()


def test_missing_tensorboard_is_a_config_error_with_the_install_line(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(DeltatuneError, match=r"logging.tensorboard.*pip install 'deltatune\[tensorboard\]'"):
        validate_config({"data": {"train": "t.jsonl"}, "logging": {"tensorboard": True}})
    validate_config({"data": {"train": "t.jsonl"}})  # off (the default): nothing is needed
    with pytest.raises(DeltatuneError, match=r"pip install 'deltatune\[tensorboard\]'"):
        MetricsLog(tmp_path / "metrics.jsonl", tensorboard=True)
