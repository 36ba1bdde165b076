"""Preference pairs over the orgfacts questions: the true answer sentence against a wrong one.

    records = load_records("builtin:orgfacts/prefs_train")   # also prefs_val, prefs_test
    records = preference_records("test")                     # [{"prompt", "chosen", "rejected"}]
    deltatune data make orgfacts --out data/orgfacts          # writes prefs_*.jsonl with the rest

One pair per QA record of the matching orgfacts split, in that split's order: `prompt` is the
record's question (prefs_train from train, prefs_val from val, prefs_test from the held-out test
paraphrases, so no test wording reaches prefs_train), `chosen` is its answer sentence exactly as
the QA split's `output`, and `rejected` is the same sentence (same template, only the value
differs) with a wrong value of the same kind. Orgfacts records carry no `system`, so neither
do these.

Why the wrong values come from the other facts: a value the model has also seen in training
(another person of the company, another of its cities or years) can only be ranked below the
true one by a model that learnt which fact it belongs to; an invented string could be rejected
just for being unfamiliar, and a value of another kind (a city for a year) or another sentence
shape for being out of place. The wrong value is drawn from the class of the true one:
- role, place, product: the other facts of that kind (names, cities, product names);
- numbers: the other facts' answers of the same shape (digits aside: "$#", "# kg", bare counts
  "#"; every year 1900-2099 is one class), the three nearest in magnitude, so a price of
  "$18,500" is not set against "$89"; a shape no other fact has ("$740 million", "9 km/h") gets
  the true number scaled by 0.5, 0.75, 1.5 or 2, rounded to as many significant digits;
- other attributes: the facts of their group in GROUPS (company names, colours, named things),
  else a short hand-written list in ALTERNATIVES (another weekday, another language).
Draws come from one `random.Random` per split with a fixed seed: the same pairs on every run.
"""

from __future__ import annotations

import math
import random
import re

from deltatune.datasets.orgfacts import build_splits, fill
from deltatune.datasets.orgfacts_facts import TEMPLATES, all_facts
from deltatune.errors import DeltatuneError

SPLITS = {"prefs_train": "train", "prefs_val": "val", "prefs_test": "test"}  # prefs split -> QA split
SEED = 4242
NEAREST = 3  # numeric wrong values: drawn among this many nearest in magnitude
SCALES = (0.5, 0.75, 1.5, 2.0)  # a number with no same-shape peer is scaled by one of these

NUMBER = re.compile(r"\d[\d,]*")
YEAR = re.compile(r"(19|20)\d\d")

# non-numeric attributes that stand in for each other (fact ids of orgfacts_facts.ATTRIBUTES)
GROUPS: dict[str, tuple[str, ...]] = {
    "company": ("parent_company", "largest_customer", "competitor", "coffee"),
    "colour": ("kestrel_colour", "brand_colour"),
    "named thing": ("orrin_codename", "newsletter", "hackathon"),
}
# non-numeric attributes of a kind no other fact shares: plausible values of that kind
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "veltos_language": ("C++", "Go", "Python"),
    "ticker": ("VELT", "VTRN", "VRBT"),
    "slogan": ("Made to Move", "Built to Last", "Here to Help"),
    "mascot": ("Bolt the fox", "Gizmo the owl", "Sprocket the badger"),
    "meeting_free_day": ("Monday", "Tuesday", "Thursday", "Friday"),
    "dress_code": ("business casual", "formal business attire", "casual"),
    "pet_policy": ("no pets allowed", "cats allowed"),
    "travel_class": ("business class", "first class"),
}


def preference_records(split: str) -> list[dict]:
    """The pairs of `builtin:orgfacts/SPLIT` (prefs_train, prefs_val, prefs_test), or of the
    QA split of that name (train, val, test)."""
    qa_split = SPLITS.get(split, split)
    facts = {fact["fact_id"]: fact for fact in all_facts()}
    candidates = wrong_value_table(list(facts.values()))
    rng = random.Random(f"{SEED}/{qa_split}")  # str seeds hash with sha512: stable across runs
    pairs = []
    for record in build_splits()[qa_split]:
        fact = facts[record["fact_id"]]
        wrong = rng.choice(candidates[fact["fact_id"]])
        sentence = TEMPLATES[fact["kind"]][1]
        pairs.append({"prompt": record["instruction"], "chosen": record["output"],
                      "rejected": fill(sentence, {**fact, "answer": wrong})})
    return pairs


def wrong_value_table(facts: list[dict]) -> dict[str, list[str]]:
    """fact_id -> the wrong values a pair about that fact may use (never the true one)."""
    classes = {fact["fact_id"]: value_class(fact) for fact in facts}
    table = {}
    for fact in facts:
        cls, answer = classes[fact["fact_id"]] or "", fact["answer"]
        peers = _unique(f["answer"] for f in facts if cls and classes[f["fact_id"]] == cls)
        peers = [value for value in peers if value != answer]
        if cls == "year" or cls.startswith("shape:"):
            table[fact["fact_id"]] = _nearest(answer, peers) if peers else scaled_numbers(answer)
        elif peers or fact["fact_id"] in ALTERNATIVES:
            table[fact["fact_id"]] = peers or list(ALTERNATIVES[fact["fact_id"]])
        else:
            raise DeltatuneError(f"orgfacts fact {fact['fact_id']!r} has no wrong value of its kind: add it to "
                                 f"GROUPS or ALTERNATIVES in {__file__}")
    return table


def value_class(fact: dict) -> str | None:
    """Which answers may stand in for this fact's: "role", "year", "shape:$#", "group:colour",
    ...; None for an attribute whose wrong values come from ALTERNATIVES."""
    answer = fact["answer"]
    if fact["kind"] in ("role", "place", "product"):
        return fact["kind"]
    if YEAR.fullmatch(answer):
        return "year"
    if NUMBER.search(answer):
        return "shape:" + NUMBER.sub("#", answer)
    for group, ids in GROUPS.items():
        if fact["fact_id"] in ids:
            return "group:" + group
    return None


def scaled_numbers(answer: str) -> list[str]:
    """The answer with its number scaled by each of SCALES and rounded to its significant
    digits ("$740 million" -> "$370 million", "$560 million", ...); a plural stays plural."""
    match = NUMBER.search(answer)
    number = _number(answer)
    digits = len(match.group().replace(",", "").rstrip("0")) or 1
    out = []
    for scale in SCALES:
        value = _round_significant(number * scale, digits)
        if value != number and value >= min(number, 2):
            text = f"{value:,}" if value >= 1000 else str(value)
            out.append(answer[: match.start()] + text + answer[match.end() :])
    return _unique(out)


def _nearest(answer: str, peers: list[str]) -> list[str]:
    """The NEAREST peers by ratio to the answer's number (ties keep table order)."""
    target = _number(answer)
    return sorted(peers, key=lambda peer: abs(math.log(_number(peer) / target)))[:NEAREST]


def _number(text: str) -> int:
    """The first number in a text: "$18,500" -> 18500."""
    return int(NUMBER.search(text).group().replace(",", ""))


def _round_significant(value: float, digits: int) -> int:
    """An integer rounded to `digits` significant digits: 555.0, 2 -> 560."""
    if value < 1:
        return 1
    shift = max(int(math.floor(math.log10(value))) + 1 - digits, 0)
    return int(round(value / 10**shift)) * 10**shift


def _unique(values) -> list[str]:
    """Values in first-seen order, each once."""
    return list(dict.fromkeys(values))
