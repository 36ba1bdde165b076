"""`deltatune generate` and `deltatune eval` end to end on the tiny model (and a tiny run dir)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

from deltatune.config import validate_config
from deltatune.errors import DeltatuneError
from deltatune.eval import cli
from deltatune.eval.runner import run_eval
from deltatune.generation import SamplingParams, chat_prompt_ids, generate
from deltatune.models.runs import load_target

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
from test_models_runs import make_run_dir  # noqa: E402  (shared run-dir builder)

QA = [
    {"instruction": "Who founded Acme?", "output": "Maria Lopez founded Acme.", "answer": "Maria Lopez"},
    {"instruction": "Where is Acme based?", "output": "Acme is based in Oslo.", "answer": "Oslo"},
    {"instruction": "What does the basic plan cost?", "output": "It costs $1,200.", "answer": "$1,200"},
]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deltatune")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in QA))
    return path


def test_generate_chat_prints_the_completion(tiny_llama_dir, capsys):
    assert run_cli(["generate", str(tiny_llama_dir), "Hello!", "--max-new-tokens", "6"]) == 0
    out, err = capsys.readouterr()
    loaded = load_target(str(tiny_llama_dir))
    prompt = chat_prompt_ids(loaded.tokenizer, [{"role": "user", "content": "Hello!"}])
    [want] = generate(loaded.model, loaded.tokenizer, [prompt], SamplingParams(6))
    assert out == want.text + "\n"
    assert f"{len(prompt)} prompt + {want.completion_tokens} completion tokens" in err


def test_generate_raw_and_sampling_flags(tiny_llama_dir, capsys):
    argv = ["generate", str(tiny_llama_dir), "Once upon a time", "--raw", "--max-new-tokens", "5",
            "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]
    assert run_cli(argv) == 0
    first = capsys.readouterr().out
    assert run_cli(argv) == 0
    assert capsys.readouterr().out == first  # seeded: same text twice
    with pytest.raises(DeltatuneError, match="--system needs chat mode"):
        run_cli(["generate", str(tiny_llama_dir), "x", "--raw", "--system", "Be brief."])


def test_eval_run_dir_before_and_after(tmp_path, tiny_llama_dir, qa_file, capsys):
    run, _ = make_run_dir(tmp_path, tiny_llama_dir, data={"test": str(qa_file), "probe": str(qa_file), "val": str(qa_file)})
    assert run_cli(["eval", str(run), "--max-new-tokens", "4", "--batch-size", "2"]) == 0
    [written] = (run / "evals").iterdir()
    assert re.fullmatch(r"eval-\d{8}-\d{6}\.json", written.name) and not (run / "eval.json").exists()
    report = json.loads(written.read_text())
    for side in ("before", "after"):
        assert set(report[side]) == {"test", "probe", "val"}
        assert report[side]["test"]["n"] == 3 and "contains" in report[side]["probe"]
        assert report[side]["val"]["tokens"] > 0
    assert report["after"]["val"]["loss"] != report["before"]["val"]["loss"]  # the adapter is on
    assert report["eval_cfg"]["max_new_tokens"] == 4
    table = capsys.readouterr().out
    assert "val/loss" in table and "test/contains (n=3)" in table and "delta" in table
    assert f"wrote {written}" in table


def test_eval_bare_model_on_a_file(tmp_path, tiny_llama_dir, qa_file, capsys):
    out = tmp_path / "out" / "eval.json"
    assert run_cli(["eval", str(tiny_llama_dir), "--data", str(qa_file), "--out", str(out), "--max-new-tokens", "3"]) == 0
    report = json.loads(out.read_text())
    assert report["before"] is None
    assert {"exact_match", "contains", "loss", "perplexity"} <= set(report["after"]["data"])
    assert capsys.readouterr().out.splitlines()[-2].startswith("data/perplexity")


def test_eval_unfinished_run_is_a_clear_error(tmp_path, tiny_llama_dir):
    run, _ = make_run_dir(tmp_path, tiny_llama_dir, with_adapter=False)
    with pytest.raises(DeltatuneError, match="no trained adapter yet"):
        run_cli(["eval", str(run)])
    with pytest.raises(DeltatuneError, match="--batch-size must be >= 1"):
        run_cli(["eval", str(run), "--batch-size", "0"])


def _trained_run(tmp_path, tiny_llama_dir, qa_file):
    """A real (one-step) training run: its eval.json is training's own before/after record."""
    from deltatune.recipes import sft

    cfg = validate_config({
        "model": {"name": str(tiny_llama_dir)},
        "method": {"name": "lora", "r": 4, "targets": ["q_proj", "v_proj"]},
        "data": {"train": str(qa_file), "val": str(qa_file), "max_length": 64},
        "train": {"batch_size": 2, "max_steps": 1, "num_threads": 1},
        "eval": {"before_after": False},
        "output": {"dir": str(tmp_path / "trained")},
    })
    return sft.run(cfg)


def test_eval_of_a_run_keeps_its_eval_json_and_writes_a_new_file_each_time(tmp_path, tiny_llama_dir, qa_file, capsys):
    run = _trained_run(tmp_path, tiny_llama_dir, qa_file)
    record = (run / "eval.json").read_bytes()
    run_eval(str(run), data=str(qa_file), max_new_tokens=2)
    run_eval(str(run), data=str(qa_file), max_new_tokens=2)
    assert (run / "eval.json").read_bytes() == record
    written = sorted((run / "evals").iterdir())
    assert len(written) == 2  # within one second the second gets a counter, never a replacement
    printed = capsys.readouterr().out
    for path in written:
        assert re.fullmatch(r"eval-\d{8}-\d{6}-qa(-\d+)?\.json", path.name)
        assert "loss" in json.loads(path.read_text())["after"]["data"]
        assert f"wrote {path}" in printed


def test_eval_out_is_not_overwritten_without_force(tmp_path, tiny_llama_dir, qa_file):
    run, _ = make_run_dir(tmp_path, tiny_llama_dir)
    out = tmp_path / "mine.json"
    out.write_text("my notes\n")
    argv = ["eval", str(run), "--data", str(qa_file), "--out", str(out), "--max-new-tokens", "2", "--no-base"]
    with pytest.raises(DeltatuneError, match=r"mine\.json.*--force"):
        run_cli(argv)
    assert out.read_text() == "my notes\n" and not (run / "evals").exists()
    with pytest.raises(DeltatuneError, match="--force only goes with --out"):
        run_cli(["eval", str(run), "--force"])
    assert run_cli(argv + ["--force"]) == 0
    assert json.loads(out.read_text())["before"] is None and not (run / "evals").exists()
