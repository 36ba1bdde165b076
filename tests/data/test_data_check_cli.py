"""`deltatune data check` report and the `data make` / `data check` sub-commands."""

from __future__ import annotations

import argparse
import json

import pytest

from deltatune.data import cli as data_cli
from deltatune.data.check import check_data, length_histogram, render_marked
from deltatune.errors import DeltatuneError


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="deltatune")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_check_report(write, tok):
    rows = [{"instruction": "Say hi", "output": "Hello there."}] + [
        {"instruction": "word " * n, "output": "ok"} for n in (5, 20, 200)
    ]
    path = write("d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    report = check_data(str(path), tok, max_length=128)
    assert "format:          alpaca (detected)" in report
    assert "records:         4" in report
    assert "examples:        3" in report  # the 200-word prompt leaves no response
    assert "truncated:       1   dropped (no response left): 1" in report
    assert "token-length histogram:" in report
    assert "<|im_start|>user\nSay hi<|im_end|>\n<|im_start|>assistant\n[[Hello there.<|im_end|>]]" in report


def test_histogram_and_marking(tok):
    rows = length_histogram([1, 2, 2, 10], bins=3, width=10)
    assert len(rows) == 3 and rows[0].endswith("########## 3") and rows[-1].endswith("1")
    ex = {"input_ids": tok("a b c", add_special_tokens=False)["input_ids"], "labels": [-100, 2, -100]}
    ex["labels"][1] = ex["input_ids"][1]
    assert render_marked(tok, ex) == "a[[ b]] c"


def test_cli_make_and_check(tmp_path, capsys, smollm2_tokenizer_dir):
    assert run_cli(["data", "make", "orgfacts", "--out", str(tmp_path)]) == 0
    assert "train.jsonl" in capsys.readouterr().out
    assert run_cli(["data", "check", str(tmp_path / "test.jsonl"), "--model", str(smollm2_tokenizer_dir),
                    "--max-length", "256", "--train-on-prompt"]) == 0
    out = capsys.readouterr().out
    assert "records:         " in out and "[[<|im_start|>system" in out  # everything trained


def test_cli_check_bad_file_raises_with_line(write, smollm2_tokenizer_dir):
    path = write("bad.jsonl", '{"instruction": "q", "output": "a"}\nnot json\n')
    with pytest.raises(DeltatuneError, match=r"bad\.jsonl:2"):
        run_cli(["data", "check", str(path), "--model", str(smollm2_tokenizer_dir)])
    with pytest.raises(DeltatuneError, match="unknown built-in dataset"):
        run_cli(["data", "make", "nope", "--out", str(path.parent / "x")])
    assert not (path.parent / "x").exists()  # nothing written on error
