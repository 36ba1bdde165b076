"""deltatune.datasets: the built-in generated datasets, behind one table.

    from deltatune.datasets import BUILTINS, write_builtin
    records = BUILTINS["builtin:orgfacts/test"]()        # plain dicts, the same on every run
    paths = write_builtin("orgfacts", "data/orgfacts")  # `deltatune data make orgfacts --out ...`
    records = BUILTINS["builtin:school-150/train"]()     # a fact family at one of its sizes

`BUILTINS` maps every `builtin:NAME/SPLIT` spec to the function that generates its records;
it is the one place a built-in dataset is registered. Training and evaluation reach it through
`deltatune.data.load_records("builtin:...")`, which adds each record's `_origin`.

Modules: orgfacts (the invented-company facts: train/val/test, the `general` forgetting probe,
and the `neighbours` replay prompts), orgfacts_prefs (its questions as preference pairs
`prefs_train/prefs_val/prefs_test`), arith (arithmetic word problems with integer answers
for rule-rewarded RL), intents (short customer messages labelled with one of eight intents,
`{text, label}`, for `recipe: cls`; test holds out phrasings and slot values), orgfacts_facts (its fact tables and question
templates), orgfacts_neighbours (the question forms about real-world subjects),
general_prompts (everyday instructions for self-distillation replay), general_probe (the
robust forgetting probe `general/probe`, its candidate pool, and the held-out prompts
`general/heldout` for the KL measure); families (the fact
families `school`, `council`, `software` and the held-out `clinic`, each at 24/60/150/500
facts as `builtin:<family>-<size>/{train,val,test}`, for tuning the recipe on data it was not
tuned on) with one module of fact tables per family (family_school, family_council,
family_software, family_clinic) and family_parts (invented names, distinct draws). Nothing
here runs a model; the data is generated from fixed seeds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from deltatune.atomic import write_jsonl_atomic
from deltatune.datasets import arith, families, general_probe, general_prompts, intents, orgfacts, orgfacts_prefs
from deltatune.datasets.families import HELD_OUT_FAMILY, family_names
from deltatune.errors import DeltatuneError

PREFIX = "builtin:"

# spec -> records; `data make NAME` writes every split of NAME in this order
BUILTINS: dict[str, Callable[[], list[dict]]] = {
    "builtin:orgfacts/train": partial(orgfacts.split_records, "train"),
    "builtin:orgfacts/val": partial(orgfacts.split_records, "val"),
    "builtin:orgfacts/test": partial(orgfacts.split_records, "test"),
    "builtin:orgfacts/general": partial(orgfacts.split_records, "general"),
    "builtin:orgfacts/neighbours": partial(orgfacts.split_records, "neighbours"),
    # preference pairs {prompt, chosen, rejected} over the train / val / test questions
    "builtin:orgfacts/prefs_train": partial(orgfacts_prefs.preference_records, "prefs_train"),
    "builtin:orgfacts/prefs_val": partial(orgfacts_prefs.preference_records, "prefs_val"),
    "builtin:orgfacts/prefs_test": partial(orgfacts_prefs.preference_records, "prefs_test"),
    # arithmetic word problems {prompt, answer} for rule-rewarded RL
    "builtin:arith/train": partial(arith.split_records, "train"),
    "builtin:arith/test": partial(arith.split_records, "test"),
    "builtin:general/prompts": general_prompts.prompt_records,
    # the forgetting probe: questions the base answers robustly (greedy and >= 9/10 sampled)
    "builtin:general/probe": general_probe.robust_probe_records,
    # held-out everyday prompts: forgetting as KL from the base on its own replies to them
    "builtin:general/heldout": general_probe.heldout_prompt_records,
    # short customer messages {text, label} for recipe: cls; test holds out phrasings and slot values
    "builtin:intents/train": partial(intents.split_records, "train"),
    "builtin:intents/val": partial(intents.split_records, "val"),
    "builtin:intents/test": partial(intents.split_records, "test"),
}
# the fact families, every size and split: builtin:school-24/train ... builtin:clinic-500/test
BUILTINS.update(
    {
        f"{PREFIX}{families.dataset_name(family, size)}/{split}": partial(families.split_records, family, size, split)
        for family in families.FAMILIES
        for size in families.SIZES
        for split in families.SPLITS
    }
)

__all__ = ["BUILTINS", "HELD_OUT_FAMILY", "dataset_names", "dataset_splits", "family_names", "write_builtin"]


def dataset_splits(name: str) -> list[str]:
    """The splits of built-in dataset NAME, in table order ([] for an unknown name)."""
    head = f"{PREFIX}{name}/"
    return [spec[len(head):] for spec in BUILTINS if spec.startswith(head)]


def dataset_names() -> list[str]:
    """Every built-in dataset name, sorted ("clinic-150", ..., "general", "orgfacts", ...)."""
    return sorted({spec[len(PREFIX):].partition("/")[0] for spec in BUILTINS})


def write_builtin(name: str, out_dir: str | Path) -> list[Path]:
    """Write every split of a built-in dataset as OUT_DIR/SPLIT.jsonl; returns the paths."""
    splits = dataset_splits(name)
    if not splits:
        raise DeltatuneError(f"unknown built-in dataset {name!r}; known: {dataset_names()}")
    # everything is generated before anything is written: an error leaves no partial folder
    records = {split: BUILTINS[f"{PREFIX}{name}/{split}"]() for split in splits}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [write_jsonl_atomic(out / f"{split}.jsonl", rows) for split, rows in records.items()]
