"""The three forgetting measures in a run's report, the cached base evaluation, and the
`deltatune eval RUN --control` noise floor, end to end on the tiny Llama.

A random-weight model never finishes a reply, so the base's replies (to held-out prompts, and
to the training prompts for the control) are stood in for by fixed `messages` records: what is
tested is what the recipe does with them (the real generator has tests of its own)."""

from __future__ import annotations

import json

import pytest

from deltatune.cli import main
from deltatune.eval.control import run_control
from deltatune.recipes import sft


def _replies(model, tokenizer, spec, system_prompt=None, max_new_tokens=128, batch_size=32, config_key=None):
    from deltatune.data import load_records

    prompts = [r["instruction"] for r in load_records(spec)]
    return [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": f"Reply {i} is blue."}]}
            for i, p in enumerate(prompts)]


@pytest.fixture
def fake_base_replies(monkeypatch, tmp_path):
    import deltatune.eval.forgetting as forgetting
    import deltatune.replay.answers as answers

    monkeypatch.setattr(forgetting, "heldout_replies", _replies)
    monkeypatch.setattr(answers, "self_replay_records", _replies)
    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))  # a fresh base-eval cache


@pytest.fixture
def measured_cfg(make_cfg, alpaca_file):
    probe = alpaca_file("probe.jsonl", 4, seed=9)
    prompts = alpaca_file("heldout.jsonl", 5, seed=7)

    def make(run="run", method=None, **train):
        return make_cfg(run=run, method=method, data={"probe": probe, "forgetting_prompts": prompts},
                        train={"max_steps": 6, **train}, eval={"before_after": True, "max_new_tokens": 3})

    return make


def test_a_run_reports_kl_from_the_base_and_the_probe_change(fake_base_replies, measured_cfg):
    run_dir = sft.run(measured_cfg())
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["before"]["forgetting"]["kl"] == pytest.approx(0.0, abs=1e-6)  # the base vs itself
    assert report["after"]["forgetting"]["kl"] > 0 and report["after"]["forgetting"]["n"] == 5
    measures = report["forgetting"]
    assert measures["kl"] == report["after"]["forgetting"]["kl"]
    assert measures["nll_increase"] == report["after"]["forgetting"]["nll_increase"]
    assert "probe_greedy_change" in measures


def test_a_method_without_a_switched_off_state_says_why_kl_is_missing(fake_base_replies, measured_cfg):
    run_dir = sft.run(measured_cfg(method={"name": "full"}, lr=1e-3))
    after = json.loads((run_dir / "eval.json").read_text())["after"]["forgetting"]
    assert after["kl"] is None and "switched-off" in after["note"]


def test_the_base_evaluation_is_cached_across_runs(fake_base_replies, measured_cfg, capsys):
    first = json.loads((sft.run(measured_cfg(run="a")) / "eval.json").read_text())["before"]
    assert "cached" not in capsys.readouterr().out
    second = json.loads((sft.run(measured_cfg(run="b", lr=5e-3)) / "eval.json").read_text())["before"]
    assert "base model evaluation: cached" in capsys.readouterr().out
    assert second == first  # the training settings do not enter the base's numbers


def test_control_trains_on_the_base_replies_and_reports_floors(fake_base_replies, measured_cfg, capsys):
    run_dir = sft.run(measured_cfg())
    result = run_control(run_dir, seeds=2)
    for seed in (0, 1):
        report = json.loads((run_dir / "control" / f"seed-{seed}" / "eval.json").read_text())
        assert report["steps"] == 6  # the run's own number of steps
        saved = (run_dir / "control" / f"seed-{seed}" / "config.yaml").read_text()
        assert "base_replies.jsonl" in saved and f"seed: {seed}" in saved
    assert result["floor"]["kl"]["n"] == 2 and result["floor"]["kl"]["mean"] > 0
    assert set(result["control"]) == {0, 1} and "kl" in result["run"]
    table = capsys.readouterr().out
    assert "control mean" in table and "probe_greedy_change" in table
    assert json.loads((run_dir / "control" / "control.json").read_text())["steps"] == 6

    # finished control seeds are reused: the CLI prints the same floors without training
    assert main(["eval", str(run_dir), "--control", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("reusing") == 2 and "control mean" in out
