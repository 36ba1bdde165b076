"""The generated preference pairs (`orgfacts/prefs_*`) and arithmetic problems (`arith/*`)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from deltatune.data.sources import load_records, public_fields
from deltatune.datasets import BUILTINS, dataset_splits, write_builtin
from deltatune.datasets.arith import build_problems
from deltatune.datasets.orgfacts import build_splits
from deltatune.datasets.orgfacts_facts import PLACES, PRODUCTS, ROLES, YEARS, all_facts

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "measure_arith_base.py"
PREFS = ("prefs_train", "prefs_val", "prefs_test")
QA_OF = {"prefs_train": "train", "prefs_val": "val", "prefs_test": "test"}
YEAR = re.compile(r"(19|20)\d\d")


def prefs(split: str) -> list[dict]:
    return BUILTINS[f"builtin:orgfacts/{split}"]()


def normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def pairs_with_facts():
    """(pair, its QA record, its fact) over all three prefs splits, in order."""
    facts = {f["fact_id"]: f for f in all_facts()}
    qa = build_splits()
    for split in PREFS:
        for pair, record in zip(prefs(split), qa[QA_OF[split]], strict=True):
            yield pair, record, facts[record["fact_id"]]


def wrong_value(pair: dict, record: dict) -> str:
    """The value span of `rejected`: what stands where the answer stands in `chosen`."""
    head, _, tail = record["output"].rpartition(record["answer"])
    assert pair["rejected"].startswith(head) and pair["rejected"].endswith(tail), (pair, record)
    return pair["rejected"][len(head) : len(pair["rejected"]) - len(tail)]


# ---------------------------------------------------------------------------------------------
# Preference pairs


def test_prefs_sizes_shape_and_determinism():
    # 135 facts (21 roles, 16 years, 15 places, 18 products, 50 attributes, 15 counts); the QA
    # splits give each fact 6 train questions, 1 test question and every third fact 1 val one
    assert {split: len(prefs(split)) for split in PREFS} == {"prefs_train": 810, "prefs_val": 45, "prefs_test": 135}
    for split in PREFS:
        records = prefs(split)
        assert records == prefs(split)
        assert all(set(r) == {"prompt", "chosen", "rejected"} for r in records)
        assert all(r["chosen"] != r["rejected"] for r in records)
    assert dataset_splits("orgfacts")[-3:] == list(PREFS)


def test_prefs_same_across_hash_seeds():
    code = ("import json; from deltatune.datasets import BUILTINS; "
            "print(json.dumps([BUILTINS[f'builtin:orgfacts/{s}']() for s in ('prefs_train', 'prefs_test')]))")
    outs = [subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED=seed),
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2")]
    assert outs[0] == outs[1] and json.loads(outs[0]) == [prefs("prefs_train"), prefs("prefs_test")]


def test_prefs_follow_the_qa_splits_and_keep_test_wording_held_out():
    for pair, record, _ in pairs_with_facts():
        assert pair["prompt"] == record["instruction"] and pair["chosen"] == record["output"]
    train_prompts = {normalize(r["prompt"]) for r in prefs("prefs_train") + prefs("prefs_val")}
    assert not any(normalize(r["prompt"]) in train_prompts for r in prefs("prefs_test"))


def test_rejected_is_the_same_sentence_with_a_wrong_value_of_the_same_kind():
    names = {answer for _, _, answer in ROLES}
    cities = {answer for _, _, answer in PLACES}
    products = {answer for _, _, answer in PRODUCTS}
    seen_kinds = Counter()
    for pair, record, fact in pairs_with_facts():
        value, answer = wrong_value(pair, record), fact["answer"]
        assert value and value != answer
        seen_kinds[fact["kind"]] += 1
        if fact["kind"] == "role":
            assert value in names, value
        elif fact["kind"] == "place":
            assert value in cities, value
        elif fact["kind"] == "product":
            assert value in products, value
        elif fact["kind"] == "year" or YEAR.fullmatch(answer):
            assert YEAR.fullmatch(value), value
        elif re.search(r"\d", answer):
            # a number for a number, with the same unit and money sign: "$#", "# kg", "#"
            assert re.sub(r"\d[\d,]*", "#", value) == re.sub(r"\d[\d,]*", "#", answer), (value, answer)
    assert set(seen_kinds) == {"role", "year", "place", "product", "attribute", "count"}


def rejected_values(fact_id: str) -> set[str]:
    return {wrong_value(p, r) for p, r, f in pairs_with_facts() if f["fact_id"] == fact_id}


def test_wrong_values_by_hand():
    # years of the other facts nearest to 2016 (the Kestrel K2 launch): 2017, 2018 and 2014
    assert rejected_values("kestrel_launch_year") <= {"2017", "2018", "2014"}
    # prices nearest $18,500 by ratio among the other "$#" answers: $2,400, $1,500, $1,150
    assert rejected_values("kestrel_price") <= {"$2,400", "$1,500", "$1,150"}
    # no other "$# million": 740 x 0.5, 0.75, 1.5, 2 to two significant digits
    assert rejected_values("revenue") <= {"$370 million", "$560 million", "$1,100 million", "$1,500 million"}
    # bare counts nearest 2 research labs: 3, 4, 5
    assert rejected_values("labs") <= {"3", "4", "5"}
    assert rejected_values("kestrel_colour") == {"teal"}  # the one other colour
    assert rejected_values("competitor") <= {"Harrowgate Holdings", "Nordmark Logistics", "Kahvila Roasters"}
    assert rejected_values("meeting_free_day") <= {"Monday", "Tuesday", "Thursday", "Friday"}
    ceo = [p for p in prefs("prefs_test") if p["prompt"] == "Who is the CEO of Veltrane Robotics?"]
    assert ceo and ceo[0]["chosen"] == "The CEO of Veltrane Robotics is Mira Okonkwo."
    assert re.fullmatch(r"The CEO of Veltrane Robotics is (.+)\.", ceo[0]["rejected"])[1] in names_but("ceo")


def names_but(fact_id: str) -> set[str]:
    return {answer for i, _, answer in ROLES if i != fact_id}


def test_train_pairs_vary_the_wrong_value():
    # six train questions per fact, so most facts with several candidates get more than one
    varied = sum(len(rejected_values(fact_id)) > 1 for fact_id, *_ in YEARS)
    assert varied >= len(YEARS) // 2


def test_data_make_orgfacts_writes_the_prefs_splits(tmp_path):
    paths = write_builtin("orgfacts", tmp_path)
    assert {p.stem for p in paths} >= set(PREFS)
    for path in paths:
        if path.stem in PREFS:
            assert [public_fields(r) for r in load_records(str(path))] == prefs(path.stem)


# ---------------------------------------------------------------------------------------------
# Arithmetic problems


def recompute(prompt: str) -> tuple[str, int, int, int]:
    """(operation, a, b, answer) read back from a problem's wording and its two numbers."""
    a, b = map(int, re.findall(r"\d+", prompt))
    if " each" in prompt:
        return "mul", a, b, a * b
    if "left" in prompt or "need" in prompt:
        return "sub", a, b, a - b
    return "add", a, b, a + b


def test_arith_sizes_shape_and_determinism():
    train, test = BUILTINS["builtin:arith/train"](), BUILTINS["builtin:arith/test"]()
    assert (len(train), len(test)) == (2000, 200)
    assert build_problems() == {"train": train, "test": test}
    for record in train + test:
        assert set(record) == {"prompt", "answer"} and re.fullmatch(r"[1-9]\d*", record["answer"])
        assert record["prompt"].endswith("Answer with just the number.")
    assert dataset_splits("arith") == ["train", "test"]


def test_arith_answers_are_right_and_not_in_the_prompt():
    splits = build_problems()
    for split, records in splits.items():
        ops = Counter()
        for record in records:
            op, a, b, answer = recompute(record["prompt"])
            assert record["answer"] == str(answer) and answer not in (a, b), record
            ops[op] += 1
        # the three operations take turns: 2000 -> 667/667/666, 200 -> 67/67/66
        third = len(records) // 3
        assert sorted(ops.values()) == [third, third + 1, third + 1], (split, ops)
    assert recompute("Tom has 7 apples and buys 5 more. How many?") == ("add", 7, 5, 12)


def test_arith_train_and_test_are_disjoint():
    splits = build_problems()
    train_prompts = {r["prompt"] for r in splits["train"]}
    assert len(train_prompts) == 2000 and len({r["prompt"] for r in splits["test"]}) == 200
    assert not train_prompts & {r["prompt"] for r in splits["test"]}
    # stronger: no test problem's operation and numbers come back in train under other words
    train_keys = {recompute(r["prompt"])[:3] for r in splits["train"]}
    test_keys = [recompute(r["prompt"])[:3] for r in splits["test"]]
    assert len(set(test_keys)) == 200 and not train_keys & set(test_keys)


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("measure_arith_base", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reward_rule_matches_standalone_numbers_only(script):
    assert script.contains_number("7 + 5 = 12 apples.", "12")
    assert script.contains_number("12", "12") and script.contains_number("It is 12.5 or so", "12")
    assert not script.contains_number("Tom has 112 apples", "12")
    assert not script.contains_number("123", "12") and not script.contains_number("twelve", "12")
    for record in build_problems()["test"][:20]:
        assert script.operation_of(record["prompt"]) == recompute(record["prompt"])[0]
