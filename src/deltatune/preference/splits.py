"""The pair datasets of a preference run: `data.train`, `data.val` (or carved), `data.test`.

    splits = load_pair_splits(cfg, tokenizer)     # every data error surfaces here, before any write
    splits.train, splits.val, splits.test         # TokenizedDataset of pairs (val / test may be None)
    splits.notes                                  # what was loaded, for eval.json

`data.probe` / `data.forgetting_prompts` stay QA / prompt files (general-knowledge forgetting,
measured as in `sft`); they are read here too, so a typo fails before training.
"""

from __future__ import annotations

from dataclasses import dataclass

from deltatune.data import load_records
from deltatune.data.carve import carve_validation
from deltatune.data.preference import build_preference_dataset
from deltatune.data.tokenize import TokenizedDataset
from deltatune.training.progress import say


@dataclass
class PairSplits:
    train: TokenizedDataset
    val: TokenizedDataset | None
    test: TokenizedDataset | None
    val_records: list[dict] | None  # carved from data.train (kept in the run dir), else None
    notes: dict


def load_pair_splits(cfg, tokenizer) -> PairSplits:
    """Tokenised pair splits; without `data.val`, `data.val_split` of the training pairs is held out."""
    data = cfg.data
    records, val_records = load_records(data.train), None
    if data.val:
        val = build_preference_dataset(load_records(data.val), tokenizer, data)
        notes = {"validation": {"source": data.val, "n": len(val)}}
    else:
        records, val_records = carve_validation(records, data.val_split, cfg.train.seed)
        val = build_preference_dataset(val_records, tokenizer, data) if val_records else None
        notes = {"validation": {"source": "carved from data.train" if val else None, "n": len(val) if val else 0}}
        if val is None:
            say("warning: no validation pairs (data.val unset and too few rows to carve): nothing held out is measured")
    train = build_preference_dataset(records, tokenizer, data)
    test = build_preference_dataset(load_records(data.test), tokenizer, data) if data.test else None
    for spec in (data.probe, data.forgetting_prompts):
        if spec:
            load_records(spec)
    notes["train"] = {"source": data.train, **{k: train.stats[k] for k in ("count", "truncated", "dropped")}}
    if test is not None:
        notes["test"] = {"source": data.test, "n": len(test)}
    return PairSplits(train, val, test, val_records, notes)


def measured_splits(splits: PairSplits) -> dict[str, TokenizedDataset]:
    """{"val": ..., "test": ...} of the splits that exist: what eval.json reports."""
    return {name: ds for name, ds in (("val", splits.val), ("test", splits.test)) if ds is not None}
