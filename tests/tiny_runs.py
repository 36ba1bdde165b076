"""Tiny, fully-measured training configs for the report and compare tests (tests/reports,
tests/compare): the tiny Llama, a generated alpaca set, a QA test split, the probe scored greedy
and sampled, and the KL measure on fixed stand-in base replies (a random-weight model never
finishes a reply of its own; tests/recipes/test_forgetting_and_control.py does the same)."""

from __future__ import annotations

import json
import random

COLOURS = ["red", "blue", "green", "amber", "violet", "teal", "black", "white"]
NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu"]


def alpaca_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"instruction": f"What colour is {NAMES[i % len(NAMES)]}'s door?", "input": "",
             "output": f"{NAMES[i % len(NAMES)]}'s door is {rng.choice(COLOURS)}.",
             "answer": rng.choice(COLOURS)} for i in range(n)]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def stand_in_replies(model, tokenizer, spec, system_prompt=None, max_new_tokens=128, batch_size=32, config_key=None):
    from deltatune.data import load_records

    prompts = [r["instruction"] for r in load_records(spec)]
    return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": f"Reply {i} is blue."}]}
            for i, p in enumerate(prompts)]


def use_stand_in_replies(monkeypatch, home) -> None:
    import deltatune.eval.forgetting as forgetting

    monkeypatch.setattr(forgetting, "heldout_replies", stand_in_replies)
    monkeypatch.setenv("DELTATUNE_HOME", str(home))  # a fresh base-eval cache
    monkeypatch.setenv("DELTATUNE_PROGRESS", "0")


def measured_raw(folder, model_dir, run_dir, steps: int = 3) -> dict:
    """A raw sft config: every report section has something to show, and it trains in seconds."""
    files = {name: write_jsonl(folder / f"{name}.jsonl", alpaca_records(n, seed))
             for name, n, seed in (("train", 24, 0), ("val", 6, 1), ("test", 4, 2), ("probe", 4, 3),
                                   ("heldout", 3, 4))}
    return {
        "recipe": "sft",
        "model": {"name": str(model_dir)},
        "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
        "data": {"train": files["train"], "val": files["val"], "test": files["test"], "probe": files["probe"],
                 "forgetting_prompts": files["heldout"], "max_length": 64},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": steps, "eval_every": 1, "schedule": "constant",
                  "seed": 0, "num_threads": 1},
        "eval": {"before_after": True, "max_new_tokens": 3, "probe_samples": 2},
        "output": {"dir": str(run_dir)},
    }
