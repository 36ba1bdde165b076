"""The work-cutting options through the real sft recipe on the tiny model: the same loss at every
step (atol 1e-5) as the plain run, and a `speed` row saying what was switched on."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from deltatune.config import validate_config
from deltatune.recipes import sft

def _rows(run_dir: Path, event: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


def _alpaca(path: Path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    rows = [{"instruction": f"What colour is door {i}? " + " ".join(rng.choice("red blue teal".split())
                                                                    for _ in range(rng.randint(0, 6))),
             "input": "", "output": f"Door {i} is {rng.choice(['red', 'blue', 'teal'])}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _cfg(tmp_path, tiny_llama_dir, run: str, **train):
    return validate_config({
        "recipe": "sft", "model": {"name": str(tiny_llama_dir)},
        "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
        "data": {"train": _alpaca(tmp_path / "train.jsonl", 24, 0), "val": _alpaca(tmp_path / "val.jsonl", 6, 1),
                 "max_length": 64},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 4, "eval_every": 2, "schedule": "constant",
                  "seed": 0, "num_threads": 1, **train},
        "eval": {"before_after": False}, "output": {"dir": str(tmp_path / run)},
    })


def test_options_keep_the_per_step_loss(tmp_path, tiny_llama_dir):
    plain = sft.run(_cfg(tmp_path, tiny_llama_dir, "plain", shared_prefix=False))
    fast = sft.run(_cfg(tmp_path, tiny_llama_dir, "fast", packing=True, ce_chunk_tokens=16,
                        gradient_checkpointing=True))
    want, got = _rows(plain, "train"), _rows(fast, "train")
    assert [r["tokens"] for r in want] == [r["tokens"] for r in got]  # the step's units are unchanged
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], abs=1e-5)
    assert [r["val_loss"] for r in _rows(fast, "val")] == pytest.approx([r["val_loss"] for r in _rows(plain, "val")],
                                                                       abs=1e-5)
    speed = _rows(fast, "speed")
    assert len(speed) == 1 and speed[0]["gradient_checkpointing"] is True and "segments" in speed[0]["attention"]
    assert not _rows(plain, "speed")


def test_shared_prefix_keeps_the_per_step_loss(tmp_path, tiny_llama_dir):
    plain = sft.run(_cfg(tmp_path, tiny_llama_dir, "plain", shared_prefix=False))
    shared = sft.run(_cfg(tmp_path, tiny_llama_dir, "shared", shared_prefix=True, ce_chunk_tokens=16))
    want, got = _rows(plain, "train"), _rows(shared, "train")
    assert [r["tokens"] for r in want] == [r["tokens"] for r in got]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], abs=1e-5)
    assert got[-1]["loss"] < got[0]["loss"]
