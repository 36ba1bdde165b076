"""The generated orgfacts dataset: reproducible, 100+ facts, test wording held out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

from deltatune.data import qa_prompt_messages
from deltatune.data.sources import load_records, public_fields
from deltatune.datasets import BUILTINS, write_builtin
from deltatune.datasets.orgfacts import GENERAL_PROBE, build_splits
from deltatune.datasets.orgfacts_facts import all_facts
from deltatune.eval.text_metrics import answer_contained

SLOT_KEYS = ("role", "event", "thing", "desc", "attr", "obj", "things")


def normalize(text: str) -> str:
    """Case, punctuation and spacing do not make a wording new."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def test_reproducible_in_process_and_across_hash_seeds(tmp_path):
    assert build_splits() == build_splits()
    code = "import json; from deltatune.datasets.orgfacts import build_splits; print(json.dumps(build_splits()))"
    outs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert outs[0] == outs[1] and json.loads(outs[0]) == build_splits()


def test_facts_are_many_varied_and_short():
    facts = all_facts()
    assert len(facts) >= 100
    assert len({f["fact_id"] for f in facts}) == len(facts)
    assert len(Counter(f["kind"] for f in facts)) >= 6
    assert all(1 <= len(f["answer"].split()) <= 4 for f in facts)


def test_splits_shape_and_answers():
    splits = build_splits()
    n_facts = len(all_facts())
    per_fact = Counter(r["fact_id"] for r in splits["train"])
    assert len(per_fact) == n_facts and set(per_fact.values()) == {6}
    assert len(splits["test"]) == n_facts
    assert 20 <= len(splits["val"]) < n_facts
    for record in splits["train"] + splits["val"] + splits["test"]:
        assert set(record) == {"instruction", "input", "output", "answer", "fact_id", "kind"}
        assert record["input"] == "" and record["answer"] in record["output"]
        # the evaluation's metric credits the training sentence (e.g. "$18,500" vs "18500")
        assert answer_contained(record["output"], record["answer"]), record


def test_test_wording_is_held_out_but_keeps_key_words():
    splits = build_splits()
    seen = {normalize(r["instruction"]) for r in splits["train"] + splits["val"]}
    assert not any(normalize(r["instruction"]) in seen for r in splits["test"])
    train_by_fact = defaultdict(set)
    for r in splits["train"]:
        train_by_fact[r["fact_id"]].add(r["instruction"])
    facts = {f["fact_id"]: f for f in all_facts()}
    for r in splits["test"]:
        fact = facts[r["fact_id"]]
        assert r["instruction"] not in train_by_fact[r["fact_id"]]
        for key in SLOT_KEYS:
            if key in fact and key != "event":  # events appear in base or past form
                assert fact[key].lower() in r["instruction"].lower(), (key, r["instruction"])


def test_general_probe_records():
    general = build_splits()["general"]
    assert 40 <= len(general) == len(GENERAL_PROBE) <= 60
    assert len({r["instruction"] for r in general}) == len(general)
    assert all(r["answer"] and len(r["answer"].split()) <= 3 for r in general)


def test_write_builtin_round_trips(tmp_path):
    paths = write_builtin("orgfacts", tmp_path / "out")
    assert sorted(p.name for p in paths) == ["general.jsonl", "neighbours.jsonl", "prefs_test.jsonl", "prefs_train.jsonl",
                                             "prefs_val.jsonl", "test.jsonl", "train.jsonl", "val.jsonl"]
    for path in paths:
        assert [public_fields(r) for r in load_records(str(path))] == BUILTINS[f"builtin:orgfacts/{path.stem}"]()


def test_every_builtin_spec_loads_through_the_one_table():
    splits = build_splits()
    expected = [f"builtin:orgfacts/{s}" for s in splits] + [f"builtin:general/{s}" for s in ("prompts", "probe", "heldout")]
    assert set(expected) <= set(BUILTINS)
    for spec, make in BUILTINS.items():
        records = load_records(spec)
        assert [public_fields(r) for r in records] == make() and records[0]["_origin"] == f"{spec}#0"


def test_qa_prompt_messages():
    record = {"instruction": "Who is the CEO?", "input": "", "answer": "x"}
    assert qa_prompt_messages(record) == [{"role": "user", "content": "Who is the CEO?"}]
    assert qa_prompt_messages(record, "S")[0] == {"role": "system", "content": "S"}
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert qa_prompt_messages(chat) == [{"role": "user", "content": "q"}]
