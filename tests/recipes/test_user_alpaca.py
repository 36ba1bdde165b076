"""The default recipe YAML, unchanged, on a user's own alpaca JSONL (issue: "the same YAML with
`data.train` pointed at a user's own alpaca JSONL file works unchanged").

`configs/smollm2/sft_lora.yaml` itself is loaded; overrides only swap the model for the tiny
Llama, point the data keys at user files (plain alpaca: no `answer` field, some with `input`),
shorten the run and the generation, and move the run dir into tmp. Replay and the KL
forgetting measure are switched off: a random-weight model never finishes an answer to replay
or to the held-out prompts (the real SmolLM2 does; replay has
tests of its own in tests/data/test_data_replay.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from deltatune.config import load_config
from deltatune.recipes import sft
from deltatune.training.metrics import read_metrics

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "smollm2" / "sft_lora.yaml"

USER_RECORDS = [
    {"instruction": "Summarise the ticket in one line.", "input": "Printer on floor 3 jams on A3 paper.",
     "output": "The floor 3 printer jams with A3 paper."},
    {"instruction": "Which team owns the billing service?", "input": "", "output": "The payments team owns billing."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "What is our on-call rotation length?", "input": "", "output": "One week per engineer."},
    {"instruction": "Classify the sentiment.", "input": "The new dashboard is great!", "output": "positive"},
    {"instruction": "Where are the design docs kept?", "input": "", "output": "In the shared drive under /design."},
]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def run_recipe(tmp_path, tiny_llama_dir, **data) -> Path:
    train = write_jsonl(tmp_path / "my_train.jsonl", USER_RECORDS * 3)
    overrides = [f"model.name={tiny_llama_dir}", f"data.train={train}", f"output.dir={tmp_path / 'run'}",
                 "train.max_steps=3", "eval.max_new_tokens=8", "data.replay=null",
                 "data.forgetting_prompts=null"]
    overrides += [f"data.{key}={'null' if value is None else value}" for key, value in data.items()]
    return sft.run(load_config(RECIPE, overrides))


def assert_finished_run(run_dir: Path, user_train: Path) -> dict:
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    logged = read_metrics(run_dir / "metrics.jsonl", "train")  # the YAML logs every 5 steps and the last
    assert logged and logged[-1]["step"] == 3
    assert all(math.isfinite(r["loss"]) for r in logged)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    recipe = yaml.safe_load(RECIPE.read_text())
    assert saved["data"]["train"] == str(user_train)
    assert saved["method"] == {**saved["method"], **recipe["method"]}  # the YAML's own LoRA settings
    assert saved["train"]["lr"] == recipe["train"]["lr"]
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["steps"] == 3 and report["stop_reason"] == "completed"
    return report


def test_default_yaml_trains_on_user_alpaca(tmp_path, tiny_llama_dir):
    val = write_jsonl(tmp_path / "my_val.jsonl", USER_RECORDS[:2])
    run_dir = run_recipe(tmp_path, tiny_llama_dir, val=val, test=None, probe=None)
    report = assert_finished_run(run_dir, tmp_path / "my_train.jsonl")
    assert set(report["after"]) == {"val"}
    assert math.isfinite(report["after"]["val"]["loss"])


def test_user_test_file_without_answers_scores_against_output(tmp_path, tiny_llama_dir):
    test_records = USER_RECORDS[1:5]  # no `answer` field: accuracy is measured against `output`
    test = write_jsonl(tmp_path / "my_test.jsonl", test_records)
    run_dir = run_recipe(tmp_path, tiny_llama_dir, val=None, test=test, probe=None)
    report = assert_finished_run(run_dir, tmp_path / "my_train.jsonl")
    for phase in ("before", "after"):  # the YAML measures the base model too
        scores = report[phase]["test"]
        assert scores["n"] == len(test_records) and 0.0 <= scores["contains"] <= 1.0
        assert [e["answer"] for e in scores["examples"]] == [r["output"] for r in test_records]
