"""Helpers for preference-recipe tests: generated pairs and configs on the tiny Llama."""

from __future__ import annotations

import json
import random

import pytest

from deltatune.config import validate_config

COLOURS = ["red", "blue", "green", "amber", "violet", "teal", "black", "white"]
NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu"]


def pair_records(n: int, seed: int = 0) -> list[dict]:
    """Pairs whose chosen answer always names the colour 'red' and rejected another colour:
    a rule a tiny model can learn in a few steps."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = NAMES[i % len(NAMES)]
        wrong = rng.choice(COLOURS[1:])
        out.append({"prompt": f"What colour is {name}'s door?", "chosen": f"{name}'s door is red.",
                    "rejected": f"{name}'s door is {wrong}."})
    return out


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def pref_cfg(tmp_path, tiny_llama_dir):
    """pref_cfg(recipe, run="run", method=..., train=..., preference=..., ...) -> Config."""
    train_file = write_jsonl(tmp_path / "pairs_train.jsonl", pair_records(24, seed=0))
    val_file = write_jsonl(tmp_path / "pairs_val.jsonl", pair_records(8, seed=1))

    def make(recipe: str, run: str = "run", method=None, train=None, data=None, **sections):
        raw = {
            "recipe": recipe,
            "model": {"name": str(tiny_llama_dir)},
            "method": method or {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
            "data": {"train": train_file, "val": val_file, "max_length": 64, **(data or {})},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "schedule": "constant",
                      "max_grad_norm": 1.0, "seed": 0, "num_threads": 1, **(train or {})},
            "eval": {"before_after": False},
            "output": {"dir": str(tmp_path / run)},
            **sections,
        }
        return validate_config(raw)

    return make
