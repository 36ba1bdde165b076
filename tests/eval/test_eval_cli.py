"""`deltatune generate` and `deltatune eval` end to end on the tiny model (and a tiny run dir)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from deltatune.errors import DeltatuneError
from deltatune.eval import cli
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
    report = json.loads((run / "eval.json").read_text())
    for side in ("before", "after"):
        assert set(report[side]) == {"test", "probe", "val"}
        assert report[side]["test"]["n"] == 3 and "contains" in report[side]["probe"]
        assert report[side]["val"]["tokens"] > 0
    assert report["after"]["val"]["loss"] != report["before"]["val"]["loss"]  # the adapter is on
    assert report["eval_cfg"]["max_new_tokens"] == 4
    table = capsys.readouterr().out
    assert "val/loss" in table and "test/contains (n=3)" in table and "delta" in table


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
