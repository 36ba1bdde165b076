"""deltatune.data: records in, token ids + loss masks + batches out.

    from deltatune.data import load_records, build_sft_dataset, BucketedBatches, collate
    records = load_records("builtin:orgfacts/train")          # or a .jsonl/.json/.csv path
    dataset = build_sft_dataset(records, tokenizer, cfg.data)  # labels -100 on prompt tokens
    for indices in BucketedBatches(dataset, 8, seed=0).batches(epoch):
        batch = collate([dataset[i] for i in indices], tokenizer.pad_token_id)

Modules: sources (files; `builtin:` specs looked up in deltatune.datasets.BUILTINS),
formats (alpaca / messages / text, QA prompts), tokenize (chat template + masking +
truncation), labels (IGNORE_INDEX), batching (length buckets, collate, teacher targets),
preference (prompt / chosen / rejected pairs: layouts, tokenisation, pair batches),
check (the `data check` report), cli (the `data` sub-commands).
This package is the pipeline only: it runs no model and imports no model, generation, loss
or eval code (only cli.py loads a tokenizer for `data check`). The generated datasets live
in deltatune.datasets, the model-run replay answers and teacher targets in deltatune.replay.
Names are imported lazily so `deltatune --help` does not pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_records": "sources",
    "detect_format": "formats",
    "to_conversation": "formats",
    "Conversation": "formats",
    "TokenizedDataset": "tokenize",
    "build_sft_dataset": "tokenize",
    "build_text_dataset": "tokenize",
    "render_chat": "tokenize",
    "encode_conversation": "tokenize",
    "BucketedBatches": "batching",
    "collate": "batching",
    "collate_teacher": "batching",
    "IGNORE_INDEX": "labels",
    "qa_prompt_messages": "formats",
    "check_data": "check",
    "build_preference_dataset": "preference",
    "collate_pairs": "preference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deltatune.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deltatune.data.{_EXPORTS[name]}"), name)
