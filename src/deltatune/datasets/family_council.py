"""The `council` fact family: an invented town council's wards, services, hours and fees.

    facts(24)    # the first 24 facts, every kind mixed in; facts(60)[:24] == facts(24)

Brindlecombe and its council are invented, and so are its wards, streets, facilities and
zones: no pretrained model can know when the bins go out on "Halvern Crescent".
Kinds: councillor (of a ward), bin_day (day and time), opening_hours, permit_fee, chair (of a
residents' group). Each kind has six question templates that keep the fact's key words and
one answer sentence; `deltatune.datasets.families` turns the facts into splits.
"""

from __future__ import annotations

import random

from deltatune.datasets.family_parts import (WEEKDAYS, Inventor, clock_times, first_facts,
                                             interleave, sample_combos)

TOWN = "Brindlecombe"
ORG = f"{TOWN} Town Council"
SEED = 4202
PER_KIND = 100  # facts per kind at the largest size (5 kinds -> 500)

# kind -> (question templates, answer sentence); slots: {org}, {town} and the fact's fields
TEMPLATES: dict[str, tuple[list[str], str]] = {
    "councillor": (
        [
            "Who is the councillor for {ward} ward on {org}?",
            "Which councillor represents {ward} ward on {org}?",
            "Who represents {ward} ward on {org}?",
            "Name the {org} councillor for {ward} ward.",
            "Tell me who the councillor for {ward} ward is on {org}.",
            "On {org}, who is the councillor of {ward} ward?",
        ],
        "The councillor for {ward} ward on {org} is {answer}.",
    ),
    "bin_day": (
        [
            "When are the bins collected on {street} in {town}?",
            "What day and time is bin collection on {street} in {town}?",
            "On {street} in {town}, when are bins collected?",
            "Tell me when the bins are collected on {street} in {town}.",
            "When does the council collect bins from {street} in {town}?",
            "When is the bin collection for {street} in {town}?",
        ],
        "Bins on {street} in {town} are collected on {answer}.",
    ),
    "opening_hours": (
        [
            "What are the opening hours of the {facility} in {town}?",
            "When is the {facility} in {town} open?",
            "What hours is the {facility} in {town} open?",
            "Tell me the opening hours of the {facility} in {town}.",
            "From what time until when is the {facility} in {town} open?",
            "In {town}, what are the opening hours of the {facility}?",
        ],
        "The {facility} in {town} is open from {answer}.",
    ),
    "permit_fee": (
        [
            "How much is a {permit} in {town}?",
            "What does a {permit} cost in {town}?",
            "What is the fee for a {permit} in {town}?",
            "Tell me the price of a {permit} in {town}.",
            "How much does {org} charge for a {permit}?",
            "In {town}, how much is the fee for a {permit}?",
        ],
        "A {permit} in {town} costs {answer}.",
    ),
    "chair": (
        [
            "Who chairs the {group} in {town}?",
            "Who is the chair of the {group} in {town}?",
            "Which person chairs the {group} in {town}?",
            "Tell me who chairs the {group} in {town}.",
            "Name the chair of the {group} in {town}.",
            "In {town}, who is the chair of the {group}?",
        ],
        "The {group} in {town} is chaired by {answer}.",
    ),
}

STREET_TYPES = ("Road", "Lane", "Close", "Crescent", "Street", "Way", "Grove", "Avenue", "Row", "Mews")
FACILITIES = ("library", "leisure centre", "swimming pool", "recycling centre", "community hall",
              "museum", "sports hall", "youth centre", "allotments office", "visitor centre")
PERMITS = ("resident parking permit", "skip permit", "street party permit", "market stall permit",
           "scaffolding permit", "pavement cafe permit", "visitor parking permit", "tree work permit",
           "busking permit", "dropped kerb permit")
GROUPS = ("residents' association", "allotment society", "neighbourhood watch", "tenants' group",
          "heritage society", "friends of the park group")


def facts(n: int) -> list[dict]:
    """The first N of the family's facts (N <= 500), kinds mixed, the same on every call."""
    return first_facts("council", all_facts(), n)


def all_facts() -> list[dict]:
    """Every fact as {fact_id, kind, answer, town, **slots}, kinds interleaved, in a fixed order."""
    rng = random.Random(SEED)
    names = Inventor(rng)
    zones = [names.word() for _ in range(30)]

    councillor = [{"ward": names.word(), "answer": names.person()} for _ in range(PER_KIND)]
    collections = sample_combos(rng, PER_KIND, WEEKDAYS, range(6, 12), range(0, 60, 5))
    bin_day = [{"street": f"{names.word()} {rng.choice(STREET_TYPES)}", "answer": f"{day} at {h}:{m:02d} am"}
               for day, h, m in collections]
    hours = sample_combos(rng, PER_KIND, clock_times(6, 10), clock_times(15, 21))
    opening_hours = [{"facility": f"{names.word()} {rng.choice(FACILITIES)}", "answer": f"{open_} to {close}"}
                     for open_, close in hours]
    # the permits and the fees are drawn apart: two permits never share a fee
    permits = sample_combos(rng, PER_KIND, PERMITS, zones)
    fees = sample_combos(rng, PER_KIND, range(12, 481), ("00", "25", "50", "75"))
    permit_fee = [{"permit": f"{permit} for the {zone} zone", "answer": f"£{pounds}.{pence}"}
                  for (permit, zone), (pounds, pence) in zip(permits, fees)]
    chair = [{"group": f"{names.word()} {rng.choice(GROUPS)}", "answer": names.person()} for _ in range(PER_KIND)]
    per_kind = {"councillor": councillor, "bin_day": bin_day, "opening_hours": opening_hours,
                "permit_fee": permit_fee, "chair": chair}
    return [dict(fact, town=TOWN) for fact in interleave("council", per_kind)]
