"""Fact families: invented facts from several domains, each at several sizes, as splits.

    deltatune data make school-150 --out data/school-150   # train/val/test JSONL
    records = load_records("builtin:council-60/train")     # or straight from a YAML config
    family_names()                                         # ["school", "council", "software", "clinic"]

Why: the default recipe is tuned on `orgfacts`; these families let it be tuned and tested on
data it was not tuned on, at the sizes users bring (24 to 500 facts). `clinic` is the
HELD-OUT family (HELD_OUT_FAMILY): kept out of all tuning, read only for the final check.

Each family is one module (family_school, family_council, family_software, family_clinic)
with ORG, SEED, TEMPLATES (kind -> six question templates + one answer sentence) and
`facts(n)`; the first N facts mix every kind, and a smaller size is a prefix of a larger one.
Splits, alpaca-shaped like orgfacts (instruction, input "", output = the answer sentence,
answer, fact_id, kind):
- `train`: 2 paraphrases of every fact (the typical user set: a few phrasings per fact);
- `val`: 1 further paraphrase for every third fact (24 facts -> 8 records);
- `test`: 1 more paraphrase of every fact, never in train or val for that fact.
Which template lands in which split comes from a `random.Random` seeded by the family's SEED
and the fact's position, so a fact's questions are the same at every size, run and machine.
"""

from __future__ import annotations

import random
from types import ModuleType

from deltatune.datasets import family_clinic, family_council, family_school, family_software
from deltatune.datasets.orgfacts import fact_record, fill

# family name -> its fact module; the one table the `builtin:<family>-<size>/<split>` specs come from
FAMILIES: dict[str, ModuleType] = {
    "school": family_school,
    "council": family_council,
    "software": family_software,
    "clinic": family_clinic,
}
HELD_OUT_FAMILY = "clinic"
SIZES = (24, 60, 150, 500)
SPLITS = ("train", "val", "test")
TRAIN_PARAPHRASES = 2
VAL_EVERY = 3  # facts 0, 3, 6, ... get a val paraphrase


def family_names(include_held_out: bool = True) -> list[str]:
    """The families in table order; without the held-out one when tuning."""
    return [name for name in FAMILIES if include_held_out or name != HELD_OUT_FAMILY]


def dataset_name(family: str, size: int) -> str:
    """"school", 150 -> "school-150": the name `deltatune data make` and `builtin:` specs use."""
    return f"{family}-{size}"


def build_splits(family: str, size: int) -> dict[str, list[dict]]:
    """train/val/test of FAMILY at SIZE facts; the same lists on every call."""
    module = FAMILIES[family]
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for index, fact in enumerate(module.facts(size)):
        templates, sentence = module.TEMPLATES[fact["kind"]]
        order = list(range(len(templates)))
        # seeded per fact, not per run: a fact keeps its test question at every size
        random.Random(module.SEED * 100_003 + index).shuffle(order)
        output = fill(sentence, fact, module.ORG)

        def record(template_index: int) -> dict:
            return fact_record(fill(templates[template_index], fact, module.ORG), output, fact)

        # order[0] -> test, order[1] -> val (every VAL_EVERY-th fact), order[2:4] -> train
        splits["test"].append(record(order[0]))
        if index % VAL_EVERY == 0:
            splits["val"].append(record(order[1]))
        splits["train"] += [record(i) for i in order[2 : 2 + TRAIN_PARAPHRASES]]
    random.Random(module.SEED).shuffle(splits["train"])
    return splits


def split_records(family: str, size: int, split: str) -> list[dict]:
    """One split's records (`builtin:FAMILY-SIZE/SPLIT`); the three are generated together
    (a few ms at 500 facts) and the others dropped."""
    return build_splits(family, size)[split]
