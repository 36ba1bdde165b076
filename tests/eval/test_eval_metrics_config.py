"""`eval.metrics` / `eval.extra`: config errors, which metrics each split gets, and the metrics
reaching evaluate(), eval.json, the before/after table and `deltatune eval --metrics`."""

import json

import pytest

from deltatune.config import DataConfig, EvalConfig, validate_config
from deltatune.data import load_records
from deltatune.errors import DeltatuneError
from deltatune.eval.metrics import METRICS, generation_scores, split_metrics
from deltatune.eval.multiple_choice import choice_accuracy
from deltatune.eval.report import comparison_rows
from deltatune.eval.runner import evaluate, run_eval, splits_from_config

QA = [
    {"instruction": "Who founded Acme?", "output": "Maria Lopez founded Acme.", "answer": "Maria Lopez"},
    {"instruction": "Where is Acme based?", "output": "Acme is based in Oslo.", "answer": "Oslo"},
    {"instruction": "What does the basic plan cost?", "output": "It costs $1,200.", "answer": "$1,200"},
]
MC = [
    {"question": "What is the capital of France?", "options": ["Paris", "Lyon", "Nice"], "answer": 0},
    {"question": "2 + 2 =", "choices": ["3", "4"], "answer": "4"},
    {"question": "Which animal barks?", "options": ["a cat", "a dog"], "answer": "B"},
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config(**eval_section):
    return validate_config({"data": {"train": "train.jsonl"}, "eval": eval_section})


def config_error(**eval_section) -> str:
    with pytest.raises(DeltatuneError) as err:
        config(**eval_section)
    return str(err.value)


def test_an_unknown_metric_is_a_config_error_listing_the_known_ones():
    message = config_error(metrics={"test": ["exact_match", "blue"]})
    assert "eval.metrics" in message and "unknown metric 'blue' in eval.metrics.test" in message
    assert all(name in message for name in METRICS)
    assert "unknown metric 'rougeL'" in config_error(metrics=["rougeL"])  # the plain list too


@pytest.mark.parametrize("section, message", [
    ({"metrics": {"tset": ["bleu"]}}, "unknown split 'tset'; splits: test, probe, val, forgetting, data"),
    ({"metrics": {"mmlu": ["mc_accuracy"]}, "extra": {"mmla": "m.jsonl"}}, "unknown split 'mmlu'.*mmla"),
    ({"metrics": {"test": ["bleu", "mc_accuracy"]}}, "cannot be mixed with bleu"),
    ({"metrics": ["mc_accuracy"]}, "name the multiple-choice split instead"),
    ({"metrics": {"test": ["kl"]}}, "kl is the forgetting split's one metric"),
    ({"metrics": {"forgetting": ["loss"]}}, "kl is the forgetting split's one metric"),
    ({"metrics": {"probe": ["sampled_contains"]}}, "needs eval.probe_samples > 0"),
    ({"metrics": {"test": []}}, "eval.metrics.test is empty"),
    ({"metrics": {"test": ["bleu", "bleu"]}}, "names 'bleu' twice"),
    ({"extra": {"test": "x.jsonl"}}, "'test' is a built-in split \\(data.test\\)"),
    ({"extra": {"data": "x.jsonl"}}, "'data' is a built-in split \\(deltatune eval --data\\)"),
    ({"extra": {"my split": "x.jsonl"}}, "must start with a letter"),
])
def test_bad_metric_settings_are_config_errors(section, message):
    assert pytest.raises(DeltatuneError, config, **section).match(message)


def test_without_eval_metrics_every_split_measures_what_it_always_did():
    cfg = config().eval
    assert split_metrics("test", cfg) == split_metrics("probe", cfg) == ("exact_match", "contains")
    assert split_metrics("val", cfg) == ("loss", "perplexity")
    assert split_metrics("forgetting", cfg) == ("kl",)
    assert split_metrics("data", cfg, QA) == ("exact_match", "contains", "loss", "perplexity")
    assert split_metrics("data", cfg, MC) == split_metrics("mmlu", cfg, MC) == ("mc_accuracy", "mc_accuracy_norm")
    sampled = config(probe_samples=3).eval
    assert split_metrics("probe", sampled) == ("exact_match", "contains", "sampled_contains")
    assert split_metrics("test", sampled) == ("exact_match", "contains")


def test_a_plain_list_is_for_every_split_that_generates_answers():
    cfg = config(metrics=["token_f1", "rouge_l"], probe_samples=2).eval
    assert split_metrics("test", cfg) == ("token_f1", "rouge_l")
    assert split_metrics("data", cfg, QA) == ("token_f1", "rouge_l")
    assert split_metrics("probe", cfg) == ("token_f1", "rouge_l", "sampled_contains")  # probe_samples still on
    assert split_metrics("val", cfg) == ("loss", "perplexity")
    assert split_metrics("forgetting", cfg) == ("kl",)
    assert split_metrics("mmlu", cfg, MC) == ("mc_accuracy", "mc_accuracy_norm")
    mapping = config(metrics={"val": ["perplexity"], "mmlu": ["mc_accuracy_norm"]}, extra={"mmlu": "m.jsonl"}).eval
    assert split_metrics("val", mapping) == ("perplexity",)
    assert split_metrics("test", mapping) == ("exact_match", "contains")  # not named: its defaults
    assert split_metrics("mmlu", mapping, MC) == ("mc_accuracy_norm",)


def test_extra_splits_join_the_config_splits():
    cfg = config(extra={"mmlu": "mmlu.jsonl", "my-qa": "builtin:orgfacts/test"})
    data = DataConfig(train="t.jsonl", test="test.jsonl", val="val.jsonl")
    assert splits_from_config(data, cfg.eval) == {"test": "test.jsonl", "val": "val.jsonl", "mmlu": "mmlu.jsonl",
                                                  "my-qa": "builtin:orgfacts/test"}
    assert splits_from_config(data) == {"test": "test.jsonl", "val": "val.jsonl"}


def test_evaluate_reports_the_selected_metrics(tiny, tmp_path):
    model, tokenizer = tiny
    qa, mc = write_jsonl(tmp_path / "qa.jsonl", QA), write_jsonl(tmp_path / "mc.jsonl", MC)
    data = DataConfig(train=qa, test=qa, val=qa)
    picked = ["exact_match", "token_f1", "rouge_l", "bleu", "chrf"]
    cfg_eval = EvalConfig(max_new_tokens=6, metrics={"test": picked, "mmlu": ["mc_accuracy"]}, extra={"mmlu": mc})
    results = evaluate(model, tokenizer, data, cfg_eval)
    assert list(results) == ["test", "val", "mmlu"]
    test = results["test"]
    assert set(test) == {"spec", *picked, "n", "examples", "seconds"}  # contains was not asked for
    examples = test["examples"]
    want = generation_scores(picked, [e["prediction"] for e in examples], [e["answer"] for e in examples])
    assert {name: test[name] for name in picked} == want and test["n"] == 3
    assert set(results["val"]) == {"spec", "loss", "perplexity", "tokens", "seconds"}
    mmlu = results["mmlu"]
    assert "mc_accuracy_norm" not in mmlu and mmlu["n"] == 3
    assert mmlu["mc_accuracy"] == choice_accuracy(model, tokenizer, load_records(mc))["mc_accuracy"]


def test_evaluate_without_eval_metrics_keeps_its_old_keys(tiny, tmp_path):
    model, tokenizer = tiny
    qa = write_jsonl(tmp_path / "qa.jsonl", QA)
    results = evaluate(model, tokenizer, DataConfig(train=qa), EvalConfig(max_new_tokens=4),
                       {"test": qa, "val": qa, "data": qa})
    assert set(results["test"]) == {"spec", "exact_match", "contains", "n", "examples", "seconds"}
    assert set(results["val"]) == {"spec", "loss", "perplexity", "tokens", "seconds"}
    assert set(results["data"]) == {"spec", "exact_match", "contains", "n", "examples", "loss", "perplexity",
                                    "tokens", "seconds"}


def test_a_multiple_choice_file_under_generation_metrics_says_what_to_use(tiny, tmp_path):
    model, tokenizer = tiny
    mc = write_jsonl(tmp_path / "mc.jsonl", MC)
    with pytest.raises(DeltatuneError, match="holds multiple-choice rows.*eval.metrics.test: \\[mc_accuracy"):
        evaluate(model, tokenizer, DataConfig(train=mc), EvalConfig(metrics={"test": ["bleu"]}), {"test": mc})


def test_deltatune_eval_data_and_metrics(tiny_llama_dir, tmp_path, capsys):
    qa, mc = write_jsonl(tmp_path / "qa.jsonl", QA), write_jsonl(tmp_path / "mc.jsonl", MC)
    payload = run_eval(str(tiny_llama_dir), data=mc, out=tmp_path / "mc.json")
    written = json.loads((tmp_path / "mc.json").read_text())
    assert written["after"]["data"]["mc_accuracy"] == payload["after"]["data"]["mc_accuracy"]
    assert {"mc_accuracy", "mc_accuracy_norm"} <= set(written["after"]["data"])  # the file's rows chose it
    assert "data/mc_accuracy (n=3)" in capsys.readouterr().out
    payload = run_eval(str(tiny_llama_dir), data=qa, max_new_tokens=4, metrics=["token_f1", "bleu"])
    assert {"token_f1", "bleu"} <= set(payload["after"]["data"]) and "loss" not in payload["after"]["data"]
    assert payload["eval_cfg"]["metrics"] == {"data": ["token_f1", "bleu"]}
    out = capsys.readouterr().out
    assert "data/token_f1 (n=3)" in out and "data/bleu" in out
    with pytest.raises(DeltatuneError, match="--metrics: unknown metric 'blue'.*known: exact_match, contains"):
        run_eval(str(tiny_llama_dir), data=qa, metrics=["blue"])


def test_the_table_shows_the_new_metrics():
    before = {"test": {"token_f1": 0.25, "bleu": 10.0, "chrf": 30.5, "n": 4}, "mmlu": {"mc_accuracy": 0.5, "n": 8}}
    after = {"test": {"token_f1": 0.5, "bleu": 12.345, "chrf": 31.0, "n": 4}, "mmlu": {"mc_accuracy": 0.625, "n": 8}}
    rows = comparison_rows(before, after)
    assert ("test/token_f1 (n=4)", "25.0%", "50.0%", "+25.0 pts") in rows
    assert ("test/bleu", "10.00", "12.35", "+2.35") in rows
    assert ("test/chrf", "30.50", "31.00", "+0.50") in rows
    assert ("mmlu/mc_accuracy (n=8)", "50.0%", "62.5%", "+12.5 pts") in rows


def test_the_eval_command_takes_metrics(tiny_llama_dir, tmp_path, capsys):
    import argparse

    from deltatune.eval import cli

    parser = argparse.ArgumentParser(prog="deltatune")
    cli.register(parser.add_subparsers(dest="command", required=True))
    mc, out = write_jsonl(tmp_path / "mc.jsonl", MC), tmp_path / "report.json"
    args = parser.parse_args(["eval", str(tiny_llama_dir), "--data", mc, "--metrics", "mc_accuracy_norm",
                              "--out", str(out)])
    assert args.func(args) == 0
    after = json.loads(out.read_text())["after"]["data"]
    assert "mc_accuracy_norm" in after and "mc_accuracy" not in after
    assert "data/mc_accuracy_norm (n=3)" in capsys.readouterr().out


def test_a_training_run_reports_selected_metrics_and_extra_splits(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    from deltatune.recipes import sft

    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))  # a fresh base-eval cache
    qa, mc = write_jsonl(tmp_path / "qa.jsonl", QA * 4), write_jsonl(tmp_path / "mc.jsonl", MC)
    cfg = validate_config({
        "model": {"name": str(tiny_llama_dir)}, "method": {"name": "lora", "r": 4, "alpha": 8},
        "data": {"train": qa, "val": qa, "test": qa, "max_length": 48},
        "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 2, "seed": 0, "num_threads": 1},
        "eval": {"max_new_tokens": 4, "metrics": {"test": ["contains", "token_f1", "chrf"]}, "extra": {"mmlu": mc}},
        "output": {"dir": str(tmp_path / "run")},
    })
    report = json.loads((sft.run(cfg) / "eval.json").read_text())
    for side in ("before", "after"):
        test = report[side]["test"]
        assert {"contains", "token_f1", "chrf"} <= set(test) and "exact_match" not in test
        assert {"mc_accuracy", "mc_accuracy_norm"} <= set(report[side]["mmlu"])
    out = capsys.readouterr().out
    assert "test/token_f1 (n=12)" in out and "test/chrf" in out and "mmlu/mc_accuracy_norm (n=3)" in out
