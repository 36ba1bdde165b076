"""The `school` fact family: an invented school's timetable, rooms, clubs and staff.

    facts(24)    # the first 24 facts, every kind mixed in; facts(60)[:24] == facts(24)

Quillmere Academy does not exist; its classes, tutor groups, houses, halls and staff carry
invented names, so no pretrained model can know who teaches "chemistry for class 9 Rernwom".
Kinds: teacher (of a class), tutor_room, club (day and hall), head_of_year, trip_date. Each
kind has six question templates that keep the fact's key words and one answer sentence;
`deltatune.datasets.families` turns the facts into train/val/test splits.
"""

from __future__ import annotations

import random

from deltatune.datasets.family_parts import DAYS, MONTHS, Inventor, first_facts, interleave, sample_combos

ORG = "Quillmere Academy"
SEED = 4101
PER_KIND = 100  # facts per kind at the largest size (5 kinds -> 500)

# kind -> (question templates, answer sentence); slots: {org} and the fact's fields
TEMPLATES: dict[str, tuple[list[str], str]] = {
    "teacher": (
        [
            "Who teaches {course} at {org}?",
            "Which teacher takes {course} at {org}?",
            "Who is the teacher for {course} at {org}?",
            "At {org}, who teaches {course}?",
            "Tell me who teaches {course} at {org}.",
            "Name the teacher of {course} at {org}.",
        ],
        "{course} at {org} is taught by {answer}.",
    ),
    "tutor_room": (
        [
            "Which room does tutor group {group} meet in at {org}?",
            "Where does tutor group {group} meet at {org}?",
            "In which room is tutor group {group} at {org}?",
            "What room is tutor group {group} based in at {org}?",
            "Tell me the room of tutor group {group} at {org}.",
            "At {org}, which room is tutor group {group} in?",
        ],
        "Tutor group {group} at {org} meets in {answer}.",
    ),
    "club": (
        [
            "When and where does the {club} meet at {org}?",
            "When does the {club} at {org} meet, and where?",
            "On which day and in which hall does the {club} meet at {org}?",
            "Tell me when and where the {club} meets at {org}.",
            "At {org}, when and where is the {club} held?",
            "Where and on what day does the {club} of {org} meet?",
        ],
        "The {club} at {org} meets on {answer}.",
    ),
    "head_of_year": (
        [
            "Who is head of {year} in {house} House at {org}?",
            "Who is the head of {year} for {house} House at {org}?",
            "Which teacher is head of {year} in {house} House at {org}?",
            "At {org}, who is head of {year} in {house} House?",
            "Tell me who is head of {year} in {house} House at {org}.",
            "Name the head of {year} in {house} House at {org}.",
        ],
        "The head of {year} in {house} House at {org} is {answer}.",
    ),
    "trip_date": (
        [
            "On what date is the {trip} at {org}?",
            "When is the {trip} at {org}?",
            "What is the date of the {trip} at {org}?",
            "Which date is the {trip} at {org} on?",
            "Tell me the date of the {trip} at {org}.",
            "At {org}, on what date is the {trip}?",
        ],
        "The {trip} at {org} is on {answer}.",
    ),
}

SUBJECTS = ("chemistry", "physics", "biology", "history", "geography", "Latin", "music", "drama",
            "art", "French", "German", "computing", "economics", "mathematics", "English")
ACTIVITIES = ("chess", "debating", "robotics", "astronomy", "choir", "rowing", "film", "poetry",
              "fencing", "gardening", "photography", "origami", "coding", "orchestra", "birdwatching")
TRIP_SUBJECTS = ("geography", "history", "biology", "art", "geology", "science", "music", "classics")
LANDMARKS = ("Caves", "Fell", "Abbey", "Gorge", "Harbour", "Moor", "Castle", "Falls", "Priory")
YEARS = tuple(range(7, 14))


def facts(n: int) -> list[dict]:
    """The first N of the family's facts (N <= 500), kinds mixed, the same on every call."""
    return first_facts("school", all_facts(), n)


def all_facts() -> list[dict]:
    """Every fact as {fact_id, kind, answer, **slots}, kinds interleaved, in a fixed order."""
    rng = random.Random(SEED)
    names = Inventor(rng)
    wings = [names.word() for _ in range(8)]
    halls = [names.word() for _ in range(24)]
    houses = [names.word() for _ in range(16)]

    teacher = [{"course": f"{rng.choice(SUBJECTS)} for class {rng.choice(YEARS)} {names.word()}",
                "answer": names.person()} for _ in range(PER_KIND)]
    rooms = sample_combos(rng, PER_KIND, wings, range(1, 4), range(1, 40))
    tutor_room = [{"group": f"{rng.choice(YEARS)} {names.word()}",
                   "answer": f"{wing} Wing room {floor}{num:02d}"} for wing, floor, num in rooms]
    meetings = sample_combos(rng, PER_KIND, DAYS[:6], halls)
    club = [{"club": f"{names.word()} {rng.choice(ACTIVITIES)} club", "answer": f"{day} in {hall} Hall"}
            for day, hall in meetings]
    heads = sample_combos(rng, PER_KIND, YEARS, houses)
    head_of_year = [{"year": f"Year {year}", "house": house, "answer": names.person()} for year, house in heads]
    dates = sample_combos(rng, PER_KIND, range(1, 29), MONTHS)
    trip_date = [{"trip": f"{rng.choice(TRIP_SUBJECTS)} trip to {names.word()} {rng.choice(LANDMARKS)}",
                  "answer": f"{day} {month}"} for day, month in dates]
    return interleave("school", {"teacher": teacher, "tutor_room": tutor_room, "club": club,
                                 "head_of_year": head_of_year, "trip_date": trip_date})
