"""The `clinic` fact family, HELD OUT: an invented hospital's units, wards, hours and charges.

    facts(24)    # the first 24 facts, every kind mixed in; facts(60)[:24] == facts(24)

Held out: this family is kept out of all tuning of the default recipe (learning rates,
budgets, replay, any choice made by looking at scores). Only the final check that the tuned
recipe works on data it was not tuned on reads it, so do not look at its numbers while
tuning (`deltatune.datasets.families.HELD_OUT_FAMILY` names it).

Ostrelle Hospital is invented; its units, wards, wings, car parks and doctors carry invented
names. Kinds: unit_head (the doctor who runs a unit), ward_floor (floor and wing),
visiting_hours, extension (a ward's phone extension), parking (hourly charge of a car park).
A ward is asked about in three kinds, as a real hospital's wards would be. Each kind has six
question templates that keep the fact's key words and one answer sentence.
"""

from __future__ import annotations

import random

from deltatune.datasets.family_parts import Inventor, clock_times, first_facts, interleave, sample_combos

ORG = "Ostrelle Hospital"
SEED = 4404
PER_KIND = 100  # facts per kind at the largest size (5 kinds -> 500)

# kind -> (question templates, answer sentence); slots: {org} and the fact's fields
TEMPLATES: dict[str, tuple[list[str], str]] = {
    "unit_head": (
        [
            "Which doctor runs the {unit} at {org}?",
            "Who runs the {unit} at {org}?",
            "Who is the doctor in charge of the {unit} at {org}?",
            "At {org}, which doctor runs the {unit}?",
            "Tell me which doctor runs the {unit} at {org}.",
            "Name the doctor who runs the {unit} at {org}.",
        ],
        "The {unit} at {org} is run by Dr {answer}.",
    ),
    "ward_floor": (
        [
            "Which floor and wing is {ward} on at {org}?",
            "On which floor and in which wing of {org} is {ward}?",
            "Where in {org} is {ward}: which floor and wing?",
            "Tell me the floor and wing of {ward} at {org}.",
            "What floor and wing of {org} is {ward} on?",
            "At {org}, what floor and wing is {ward} on?",
        ],
        "{ward} at {org} is on {answer}.",
    ),
    "visiting_hours": (
        [
            "What are the visiting hours on {ward} at {org}?",
            "When are the visiting hours for {ward} at {org}?",
            "During which visiting hours can I see patients on {ward} at {org}?",
            "Tell me the visiting hours of {ward} at {org}.",
            "At {org}, what are the visiting hours on {ward}?",
            "What visiting hours does {ward} at {org} have?",
        ],
        "Visiting hours on {ward} at {org} are {answer}.",
    ),
    "extension": (
        [
            "What is the phone extension of {ward} at {org}?",
            "Which phone extension do I ring for {ward} at {org}?",
            "What phone extension number does {ward} at {org} have?",
            "Tell me the phone extension for {ward} at {org}.",
            "At {org}, what is the phone extension for {ward}?",
            "Which internal phone extension reaches {ward} at {org}?",
        ],
        "The phone extension of {ward} at {org} is {answer}.",
    ),
    "parking": (
        [
            "How much does parking cost at the {car_park} of {org}?",
            "What is the parking charge at the {car_park} of {org}?",
            "How much is parking per hour at the {car_park} of {org}?",
            "Tell me the parking cost at the {car_park} of {org}.",
            "At {org}, what does parking in the {car_park} cost?",
            "What do I pay for parking at the {car_park} of {org}?",
        ],
        "Parking at the {car_park} of {org} costs {answer}.",
    ),
}

SPECIALTIES = ("cardiology", "neurology", "dermatology", "oncology", "paediatrics", "orthopaedics",
               "nephrology", "haematology", "rheumatology", "urology", "endocrinology", "radiology",
               "ophthalmology", "gastroenterology", "respiratory", "geriatrics")
CAR_PARKS = ("car park", "multi-storey car park", "visitor car park", "staff car park")


def facts(n: int) -> list[dict]:
    """The first N of the family's facts (N <= 500), kinds mixed, the same on every call."""
    return first_facts("clinic", all_facts(), n)


def all_facts() -> list[dict]:
    """Every fact as {fact_id, kind, answer, **slots}, kinds interleaved, in a fixed order."""
    rng = random.Random(SEED)
    names = Inventor(rng)
    wings = [names.word() for _ in range(12)]
    wards = [f"{names.word()} ward" for _ in range(PER_KIND)]
    # a doctor's answer is the bare name: a reply without "Dr" still counts as right

    unit_head = [{"unit": f"{names.word()} {rng.choice(SPECIALTIES)} unit", "answer": names.person()}
                 for _ in range(PER_KIND)]
    places = sample_combos(rng, PER_KIND, range(1, 13), wings)
    ward_floor = [{"ward": ward, "answer": f"floor {floor}, {wing} Wing"} for ward, (floor, wing) in zip(wards, places)]
    hours = sample_combos(rng, PER_KIND, clock_times(10, 15), clock_times(17, 21))
    visiting_hours = [{"ward": ward, "answer": f"{start} to {end}"} for ward, (start, end) in zip(wards, hours)]
    numbers = rng.sample(range(1000, 10_000), PER_KIND)
    extension = [{"ward": ward, "answer": str(number)} for ward, number in zip(wards, numbers)]
    charges = sample_combos(rng, PER_KIND, range(1, 10), range(0, 100, 5))
    parking = [{"car_park": f"{names.word()} {rng.choice(CAR_PARKS)}", "answer": f"£{pounds}.{pence:02d} per hour"}
               for pounds, pence in charges]
    return interleave("clinic", {"unit_head": unit_head, "ward_floor": ward_floor, "visiting_hours": visiting_hours,
                                 "extension": extension, "parking": parking})
