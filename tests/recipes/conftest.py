"""Helpers for recipe tests: small generated alpaca data and configs on the tiny Llama."""

from __future__ import annotations

import json
import random

import pytest

from deltatune.config import validate_config

COLOURS = ["red", "blue", "green", "amber", "violet", "teal", "black", "white"]
NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu"]


def alpaca_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name, colour = NAMES[i % len(NAMES)], rng.choice(COLOURS)
        extra = " ".join(rng.choice(COLOURS) for _ in range(rng.randint(0, 6)))  # varied lengths
        out.append({"instruction": f"What colour is {name}'s door? {extra}".strip(),
                    "input": "", "output": f"{name}'s door is {colour}."})
    return out


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def alpaca_file(tmp_path):
    """alpaca_file(name, n, seed) -> path of a generated alpaca JSONL file."""
    return lambda name, n, seed=0: write_jsonl(tmp_path / name, alpaca_records(n, seed))


@pytest.fixture
def make_cfg(tmp_path, tiny_llama_dir):
    """make_cfg(run="run", method={...}, train={...}, ...) -> Config on the tiny model."""
    train_file = write_jsonl(tmp_path / "train.jsonl", alpaca_records(24, seed=0))
    val_file = write_jsonl(tmp_path / "val.jsonl", alpaca_records(6, seed=1))

    def make(run: str = "run", method=None, train=None, data=None, **sections):
        raw = {
            "recipe": "sft",
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


@pytest.fixture
def capture_model(monkeypatch):
    """Record the model the recipe trains and a copy of its frozen parameters after apply."""
    seen = {}
    from deltatune.recipes import sft

    real_apply = sft.apply_method

    def spy(model, method_cfg, **kwargs):
        out = real_apply(model, method_cfg, **kwargs)
        seen["model"] = model
        seen["frozen"] = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        seen["trainable"] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return out

    monkeypatch.setattr(sft, "apply_method", spy)
    return seen
