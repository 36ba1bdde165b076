"""The built-in `intents` data set (recipe: cls): reproducible, labelled, and a real held-out test."""

from __future__ import annotations

import re
from collections import Counter

from deltatune.data import load_records
from deltatune.datasets import BUILTINS, dataset_splits
from deltatune.datasets import intents


def _splits():
    return {split: load_records(f"builtin:intents/{split}") for split in ("train", "val", "test")}


def test_registered_and_shaped():
    assert dataset_splits("intents") == ["train", "val", "test"]
    splits = _splits()
    for split, rows in splits.items():
        assert len(rows) == intents.SIZES[split]
        assert all(set(r) == {"text", "label", "_origin"} and r["text"].strip() for r in rows)
        assert {r["label"] for r in rows} == set(intents.INTENTS)
    assert splits["test"][4]["_origin"] == "builtin:intents/test#4"  # errors can name the row


def test_the_same_records_every_time():
    assert BUILTINS["builtin:intents/train"]() == intents.build_splits()["train"]
    assert intents.build_splits() == intents.build_splits()


def test_no_text_in_two_splits_and_none_twice():
    texts = {split: [r["text"].lower() for r in rows] for split, rows in _splits().items()}
    for split, rows in texts.items():
        assert len(set(rows)) == len(rows), split
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["train"]) & set(texts["val"])
    assert not set(texts["val"]) & set(texts["test"])


def _template_regex(template: str) -> re.Pattern:
    """A template as a regex over a dressed message: slots match anything."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".*".join(re.escape(p.lower()) for p in parts))


def test_test_phrasings_and_slot_values_are_held_out():
    splits = _splits()
    for intent, templates in intents.INTENTS.items():
        held, common = templates[-intents.TEST_TEMPLATES:], templates[:-intents.TEST_TEMPLATES]
        for row in splits["test"]:
            if row["label"] == intent:
                text = row["text"].lower()
                assert any(_template_regex(t).search(text) for t in held), text
        for row in splits["train"] + splits["val"]:
            if row["label"] == intent:
                assert not any(_template_regex(t).search(row["text"].lower()) for t in held), row["text"]
                assert any(_template_regex(t).search(row["text"].lower()) for t in common), row["text"]
    test_only = [v.lower() for _, held in intents.SLOTS.values() for v in held]
    train_text = " ".join(r["text"].lower() for r in splits["train"] + splits["val"])
    assert not [v for v in test_only if v in train_text]
    test_text = " ".join(r["text"].lower() for r in splits["test"])
    assert sum(v in test_text for v in test_only) >= len(test_only) // 2  # they are really used


def test_labels_are_mildly_unbalanced():
    counts = Counter(r["label"] for r in load_records("builtin:intents/train"))
    majority = max(counts.values()) / sum(counts.values())
    assert 1 / len(intents.INTENTS) < majority < 0.25
