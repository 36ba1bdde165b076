"""Did the run learn? The end-of-run verdict, the carved validation split and the size-aware
budget, end to end on the tiny Llama (issue: "a run that cannot learn prints the warning; a
normal run does not")."""

from __future__ import annotations

import json

from deltatune.methods.registry import METHODS, get_method
from deltatune.recipes import sft

LEARNS = {"name": "full"}


def _report(run_dir) -> dict:
    return json.loads((run_dir / "eval.json").read_text())


def test_a_run_that_learns_says_so(make_cfg, capsys):
    run_dir = sft.run(make_cfg(method=LEARNS, train={"max_steps": 30, "lr": 3e-3}))
    learning = _report(run_dir)["learning"]
    assert learning["learned"] is True, learning
    assert learning["checks"]["val_loss"]["after"] < learning["checks"]["val_loss"]["before"]
    out = capsys.readouterr().out
    assert "learned: held-out val loss" in out and "did not learn" not in out


def test_a_learning_rate_far_too_low_prints_the_warning(make_cfg, capsys):
    run_dir = sft.run(make_cfg(method=LEARNS, train={"max_steps": 30, "lr": 1e-9}))
    learning = _report(run_dir)["learning"]
    assert learning["learned"] is False and learning["checks"]["val_loss"]["ok"] is False
    assert any("validation loss fell only" in w for w in learning["warnings"])
    out = capsys.readouterr().out
    assert "WARNING: the run did not learn" in out and "train.lr" in out


def test_validation_is_carved_from_train_when_none_is_given(make_cfg, alpaca_file):
    train = alpaca_file("train30.jsonl", 30, seed=2)
    run_dir = sft.run(make_cfg(data={"train": train, "val": None}, train={"max_steps": 4}))
    report = _report(run_dir)
    assert report["data"]["validation"]["n"] == 3  # 10% of 30 rows
    held = [json.loads(line) for line in (run_dir / "val_heldout.jsonl").read_text().splitlines()]
    trained = [json.loads(line) for line in open(train)]
    assert len(held) == 3 and all(r in trained for r in held) and not any("_origin" in r for r in held)
    assert report["after"]["val"]["loss"] > 0 and "val_loss" in report["learning"]["checks"]


def test_too_few_rows_train_without_validation_and_say_so(make_cfg, alpaca_file, capsys):
    train = alpaca_file("train6.jsonl", 6)
    run_dir = sft.run(make_cfg(data={"train": train, "val": None}, train={"max_steps": 2}))
    out = capsys.readouterr().out
    assert "no validation split" in out and "nothing held out will be measured" in out
    report = _report(run_dir)
    assert report["data"]["validation"]["n"] == 0 and not (run_dir / "val_heldout.jsonl").exists()
    assert report["learning"]["learned"] is None
    assert any("nothing held out was measured" in w for w in report["learning"]["warnings"])
    assert (run_dir / "adapter").is_dir()


def test_auto_epochs_size_the_run_and_are_recorded(make_cfg):
    # 24 rows -> 12 epochs (the auto rule's cap) of 6 batches of 4
    run_dir = sft.run(make_cfg(train={"max_steps": None, "warmup_steps": "auto", "eval_every": "auto"}))
    report = _report(run_dir)
    assert report["steps"] == 72 and report["budget"]["epochs"] == 12.0
    assert report["budget"]["warmup_steps"] == 4 and report["budget"]["eval_every"] == 9
    assert report["budget"]["batch_size"] == 4  # given, not auto


def test_auto_batch_size_gives_a_small_set_small_batches(make_cfg):
    # 24 rows: no size in (8, 4, 2) reaches 24 steps per epoch, so the smallest, 2: 12 steps
    run_dir = sft.run(make_cfg(train={"max_steps": None, "epochs": 1, "batch_size": "auto"}))
    report = _report(run_dir)
    assert report["budget"]["batch_size"] == 2 and report["steps"] == 12
    assert "train.batch_size auto: 2" in report["budget"]["rule"]


def test_the_advice_names_the_methods_own_capacity_key():
    from deltatune.eval.verdict import learning_verdict

    before, after = {"val": {"loss": 2.0}}, {"val": {"loss": 1.99}}
    said = learning_verdict(before, after, capacity_hint=get_method("said").capacity_hint)
    assert said["learned"] is False and any("method.d" in a for a in said["advice"])
    assert not any("method.r" in a for a in said["advice"])
    assert not any("method." in a for a in learning_verdict(before, after)["advice"])  # full: no capacity hint


def test_every_capacity_hint_names_keys_the_method_has():
    import re

    for name in METHODS:
        method = get_method(name)
        for key in re.findall(r"method\.(\w+)", method.capacity_hint):
            assert key in method.config_cls.model_fields, f"{name}: hint names method.{key}, not one of its keys"
        assert method.capacity_hint or method.trains_base_weights and name == "full", name
