"""The fact families (school, council, software, held-out clinic): sizes, splits, wording
held out per split, answers that are short, distinct and contained in their sentences,
determinism, registration behind `builtin:` and orgfacts left as it was."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from deltatune.data import cli as data_cli
from deltatune.data.sources import load_records, public_fields
from deltatune.datasets import BUILTINS, HELD_OUT_FAMILY, dataset_names, dataset_splits, family_names, write_builtin
from deltatune.datasets.families import FAMILIES, SIZES, SPLITS, build_splits
from deltatune.eval.text_metrics import answer_contained, normalise

CASES = [(family, size) for family in FAMILIES for size in SIZES]
# sha256 of json.dumps(records, sort_keys=True) for builtin:orgfacts/*, taken before the families existed
ORGFACTS_SHA256 = {
    "train": "b4d4ff07bbffb072f6403fe6615e09c4e29687d3e6f90c25aa8e741c137e837a",
    "val": "9663d3db59011f7c753d98bbc7900ef2506e6fbe93d1c0799b6754cfbc95ff83",
    "test": "d247657e919a70638a8f44a1e6f4b579e0ff2bd85cc138ba664c9a8b77e0ab0a",
}


def wording(text: str) -> str:
    """Case, punctuation and spacing do not make a question new."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


@pytest.fixture(scope="module")
def splits():
    """(family, size) -> build_splits(family, size), built once for the module."""
    return {case: build_splits(*case) for case in CASES}


def test_names_and_the_held_out_family():
    assert family_names() == ["school", "council", "software", "clinic"]
    assert HELD_OUT_FAMILY == "clinic" and HELD_OUT_FAMILY not in family_names(include_held_out=False)
    assert "held out" in FAMILIES[HELD_OUT_FAMILY].__doc__.lower()
    assert SIZES == (24, 60, 150, 500)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_templates_are_many_distinct_and_answered(family):
    templates = FAMILIES[family].TEMPLATES
    assert len(templates) >= 4
    for questions, sentence in templates.values():
        assert len(questions) >= 5 and len({wording(q) for q in questions}) == len(questions)
        assert "{answer}" in sentence and not any("{answer}" in q for q in questions)


@pytest.mark.parametrize("family,size", CASES)
def test_split_sizes_and_record_shape(splits, family, size):
    parts = splits[family, size]
    assert set(parts) == set(SPLITS)
    test_ids = [r["fact_id"] for r in parts["test"]]
    assert len(test_ids) == len(set(test_ids)) == size
    train_per_fact = Counter(r["fact_id"] for r in parts["train"])
    assert len(parts["train"]) == 2 * size and set(train_per_fact) == set(test_ids)
    assert set(train_per_fact.values()) == {2}
    val_ids = [r["fact_id"] for r in parts["val"]]
    assert len(val_ids) == len(set(val_ids)) >= 8 and set(val_ids) <= set(test_ids)
    assert abs(len(val_ids) - size / 3) <= 1
    # every kind of the family appears at every size, in every split's facts
    assert {r["kind"] for r in parts["test"]} == set(FAMILIES[family].TEMPLATES)
    for record in parts["train"] + parts["val"] + parts["test"]:
        assert set(record) == {"instruction", "input", "output", "answer", "fact_id", "kind"}
        assert record["input"] == "" and 1 <= len(record["answer"].split()) <= 4
        assert answer_contained(record["output"], record["answer"]), record
        # the question never gives its answer away
        assert not answer_contained(record["instruction"], record["answer"]), record


@pytest.mark.parametrize("family,size", CASES)
def test_each_split_has_its_own_wording(splits, family, size):
    parts = splits[family, size]
    by_fact = defaultdict(list)
    for split in SPLITS:
        for record in parts[split]:
            by_fact[record["fact_id"]].append(wording(record["instruction"]))
    for fact_id, questions in by_fact.items():
        assert len(questions) == len(set(questions)), (fact_id, questions)
    where = defaultdict(set)
    for split in SPLITS:
        for record in parts[split]:
            where[wording(record["instruction"])].add(split)
    assert all(len(found) == 1 for found in where.values())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_answers_of_one_kind_rarely_repeat(splits, family):
    by_kind = defaultdict(list)
    for record in splits[family, max(SIZES)]["test"]:
        by_kind[record["kind"]].append(normalise(record["answer"]))  # as the metric sees them
    for kind, answers in by_kind.items():
        shared = len(answers) - len(set(answers))
        assert shared <= 0.05 * len(answers), (kind, Counter(answers).most_common(3))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_smaller_sizes_are_prefixes(splits, family):
    module = FAMILIES[family]
    assert module.facts(24) == module.facts(500)[:24]
    assert splits[family, 24]["test"] == splits[family, 60]["test"][:24]
    assert splits[family, 24]["val"] == splits[family, 60]["val"][:8]
    with pytest.raises(ValueError):
        module.facts(501)


def test_deterministic_in_process_and_across_hash_seeds():
    for family in FAMILIES:
        assert build_splits(family, 60) == build_splits(family, 60)
    code = ("import json; from deltatune.datasets.families import build_splits; "
            "print(json.dumps([build_splits(f, 60) for f in ('school', 'council', 'software', 'clinic')]))")
    env = dict(os.environ, PYTHONHASHSEED="7")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [build_splits(family, 60) for family in FAMILIES]


def test_registered_behind_builtin_specs(splits):
    for family, size in CASES:
        name = f"{family}-{size}"
        assert name in dataset_names() and dataset_splits(name) == list(SPLITS)
        assert all(f"builtin:{name}/{split}" in BUILTINS for split in SPLITS)
    records = load_records("builtin:school-24/train")
    assert [public_fields(r) for r in records] == splits["school", 24]["train"]
    assert records[0]["_origin"] == "builtin:school-24/train#0"


def test_write_builtin_and_data_make(splits, tmp_path):
    paths = write_builtin("council-24", tmp_path / "council")
    assert sorted(p.name for p in paths) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    for path in paths:
        assert [public_fields(r) for r in load_records(str(path))] == splits["council", 24][path.stem]
    parser = argparse.ArgumentParser(prog="deltatune")
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "make", "school-150", "--out", str(tmp_path / "school")])
    assert args.func(args) == 0
    lines = (tmp_path / "school" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == splits["school", 150]["train"]


def test_orgfacts_records_unchanged():
    for split, digest in ORGFACTS_SHA256.items():
        records = BUILTINS[f"builtin:orgfacts/{split}"]()
        assert hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest() == digest, split
