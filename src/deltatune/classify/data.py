"""The labelled splits of a classification run: `data.train`, `data.val` (or carved), `data.test`.

    splits = load_cls_splits(cfg, tokenizer)   # every data error surfaces here, before any write
    splits.train / .val / .test                # TokenizedDataset of {"input_ids", "label"} (val, test may be None)
    splits.labels                              # LabelSet found in data.train
    splits.notes                               # what was loaded, for eval.json
    batch = collate_labels(examples, pad_id)   # {"input_ids", "attention_mask" (B, T), "labels" (B,)}

Rows are JSONL / JSON / CSV records (or `builtin:intents/...`) with a text and a label under
`classify.text_field` / `classify.label_field`. A row without a label, or a val / test label
that data.train never shows, is an error naming file:line. Texts longer than
`data.max_length` tokens are cut (counted in the stats as `truncated`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from deltatune.classify.labels import LabelSet
from deltatune.data import load_records
from deltatune.data.carve import carve_validation
from deltatune.data.sources import origin
from deltatune.data.tokenize import TokenizedDataset
from deltatune.errors import DeltatuneError
from deltatune.training.progress import say


@dataclass
class ClsSplits:
    train: TokenizedDataset
    val: TokenizedDataset | None
    test: TokenizedDataset | None
    labels: LabelSet
    val_records: list[dict] | None  # carved from data.train (kept in the run dir), else None
    notes: dict


def record_text(record: dict, field: str, spec: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        keys = ", ".join(k for k in record if not k.startswith("_"))
        raise DeltatuneError(f"{origin(record)}: no text: the record needs a non-empty string '{field}' "
                             f"(its keys: {keys or 'none'}). Fix the row of {spec} or set classify.text_field")
    return value


def encode_texts(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """(token ids per text, how many were cut to max_length): the tokenizer's special tokens
    included ([CLS] ... [SEP] for BERT)."""
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    cut = sum(len(row) > max_length for row in ids)
    return [row[:max_length] for row in ids], cut


def build_cls_dataset(records: list[dict], labels: LabelSet, tokenizer, cfg, spec: str) -> TokenizedDataset:
    texts = [record_text(r, cfg.classify.text_field, spec) for r in records]
    ids = [labels.id_of(r, cfg.classify.label_field, spec) for r in records]
    tokens, cut = encode_texts(tokenizer, texts, cfg.data.max_length)
    examples = [{"input_ids": row, "label": label} for row, label in zip(tokens, ids)]
    counts = Counter(ids)
    stats = {"count": len(examples), "truncated": cut, "dropped": 0, "max_length": cfg.data.max_length,
             "label_counts": {labels.names[i]: counts.get(i, 0) for i in range(len(labels))}}
    return TokenizedDataset(examples, stats)


def load_cls_splits(cfg, tokenizer) -> ClsSplits:
    """Tokenised labelled splits; without `data.val`, `data.val_split` of the training rows is held out."""
    data = cfg.data
    for key in ("probe", "forgetting_prompts", "replay"):
        if getattr(data, key):
            raise DeltatuneError(f"data.{key} is a generation measure; recipe: cls does not use it: remove data.{key}")
    records = load_records(data.train)
    labels = LabelSet.from_records(records, cfg.classify.label_field, data.train)
    val_records = None
    if data.val:
        val = build_cls_dataset(load_records(data.val), labels, tokenizer, cfg, data.val)
        notes = {"validation": {"source": data.val, "n": len(val)}}
    else:
        records, val_records = carve_validation(records, data.val_split, cfg.train.seed)
        val = build_cls_dataset(val_records, labels, tokenizer, cfg, data.train) if val_records else None
        notes = {"validation": {"source": "carved from data.train" if val else None, "n": len(val) if val else 0}}
        if val is None:
            say("warning: no validation rows (data.val unset and too few rows to carve): nothing held out is measured")
    train = build_cls_dataset(records, labels, tokenizer, cfg, data.train)
    test = build_cls_dataset(load_records(data.test), labels, tokenizer, cfg, data.test) if data.test else None
    notes["train"] = {"source": data.train, **{k: train.stats[k] for k in ("count", "truncated", "label_counts")}}
    if test is not None:
        notes["test"] = {"source": data.test, "n": len(test)}
    notes["labels"] = list(labels.names)
    return ClsSplits(train, val, test, labels, val_records, notes)


def measured_splits(splits: ClsSplits) -> dict[str, TokenizedDataset]:
    """{"val": ..., "test": ...} of the splits that exist: what eval.json reports."""
    return {name: ds for name, ds in (("val", splits.val), ("test", splits.test)) if ds is not None}


def majority_label(train: TokenizedDataset) -> int:
    """The commonest training label id (the lowest id among ties): the majority-class baseline."""
    counts = Counter(ex["label"] for ex in train.examples)
    return min(counts, key=lambda label: (-counts[label], label))


def collate_labels(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) `input_ids` and `attention_mask`, and (B,) class ids `labels`."""
    width = max(len(ex["input_ids"]) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for row, ex in enumerate(examples):
        n = len(ex["input_ids"])
        input_ids[row, :n] = torch.tensor(ex["input_ids"], dtype=torch.long)
        attention_mask[row, :n] = 1
    labels = torch.tensor([int(ex.get("label", -1)) for ex in examples], dtype=torch.long)  # (B,)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def rows_in(batch: dict) -> int:
    """Units of a classification batch: its rows (each row's loss weighs the same)."""
    return int(batch["labels"].shape[0])
