"""Building blocks shared by the fact families (`deltatune.datasets.families`).

    rng = random.Random(SEED)
    names = Inventor(rng)
    names.word()                       # "Talvern": an invented word, never the same one twice
    names.person()                     # "Nora Marloby": a real first name, invented surname
    sample_combos(rng, 3, DAYS, HOURS) # three distinct (day, hour) pairs
    interleave("school", {"teacher": [...], "club": [...]})  # facts, kinds taken in turn

Why invented words: a pretrained model cannot know them, so its accuracy before tuning stays
near zero and accuracy after tuning measures what was learnt. Everything draws from one
`random.Random` passed in, so a family's facts are the same on every run and machine.
"""

from __future__ import annotations

import itertools
import random
import re

# few, plain letter groups: invented words should read easily and tokenise like names
_ONSETS = "b br c d dr f g gr h k l m n p r s st t tr v w".split()
_VOWELS = "a e i o u a e o ai ea".split()
_CODAS = ["", "", "", "n", "r", "l", "m", "s", "nd", "rn", "ll", "v", "x"]
_SURNAME_ENDS = ["by", "worth", "ick", "ford", "ley", "mere", "ton", "well", "stead", "holm"]
# never invented: a word the metric's normaliser turns into a digit ("seven" -> "7"), or
# one holding a rude word
_NUMBER_WORDS = set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety".split()
)
_RUDE = ("fuc", "fuk", "shit", "cunt", "piss", "cock", "dick", "slut", "nazi", "rape", "porn",
         "twat", "wank", "tit", "arse", "anal", "cum", "fag", "sex", "nig", "kill", "hell", "damn")
FIRST_NAMES = (
    "Nora Tobias Ilse Dario Esther Priya Oskar Yuki Lenora Camila Anouk Rafferty Selma Jonas "
    "Farida Tiago Kenji Ngozi Luca Mirela Aurelio Beatrix Caspian Delphine Emrys Fenna Gideon "
    "Hester Ivo Juno Kasimir Linnea Matthias Odile Pavel Quentin Rosalind Soren Thea Ulric "
    "Vesna Wendell Xenia Yannick Zelda Agnes Bastian Cordelia Dmitri Elodie"
).split()
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
DAYS = WEEKDAYS + ("Saturday", "Sunday")
MONTHS = (
    "January February March April May June July August September October November December"
).split()


class Inventor:
    """Invents names from syllables; one instance never returns the same word twice, so
    entities built from its words are distinct and their questions never coincide."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int = 2) -> str:
        """A fresh capitalised word of SYLLABLES syllables ("Talvern", "Talvera")."""
        for _ in range(10_000):
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                     for _ in range(syllables)]
            word = "".join(parts)
            if word not in self.used and _acceptable(word):
                self.used.add(word)
                return word.capitalize()
        raise RuntimeError("ran out of invented words")  # unreachable at the families' sizes

    def surname(self) -> str:
        """A fresh invented surname ("Marloby", "Drenworth")."""
        return self.word(2) + self.rng.choice(_SURNAME_ENDS)

    def person(self) -> str:
        """A real first name and a fresh invented surname: natural, yet unknowable."""
        return f"{self.rng.choice(FIRST_NAMES)} {self.surname()}"


def _acceptable(word: str) -> bool:
    """4-9 letters, no letter three times running, no number word, nothing rude."""
    return (4 <= len(word) <= 9 and word not in _NUMBER_WORDS and not re.search(r"(.)\1\1", word)
            and not any(rude in word for rude in _RUDE))


def sample_combos(rng: random.Random, k: int, *choices) -> list[tuple]:
    """K distinct tuples drawn from the product of CHOICES, in a random order; used for
    answers (day + time, floor + wing) that must not repeat within one kind."""
    return rng.sample(list(itertools.product(*choices)), k)


def clock_times(first_hour: int, last_hour: int, step: int = 15) -> list[str]:
    """"7:00", "7:15", ... "LAST_HOUR:45": the candidate times for opening and visiting hours."""
    return [f"{h}:{m:02d}" for h in range(first_hour, last_hour + 1) for m in range(0, 60, step)]


def first_facts(family: str, facts: list[dict], n: int) -> list[dict]:
    """The first N of a family's FACTS; an N the family cannot supply is an error."""
    if not 0 < n <= len(facts):
        raise ValueError(f"the {family} family has 1..{len(facts)} facts, not {n}")
    return facts[:n]


def interleave(family: str, per_kind: dict[str, list[dict]]) -> list[dict]:
    """Facts from every kind taken in turn (kind A #0, kind B #0, ..., kind A #1, ...), each
    given `fact_id` FAMILY_KIND_NNN and `kind`: every prefix mixes all kinds, so a family's
    smaller sizes are prefixes of its larger ones."""
    facts = []
    for index, group in enumerate(itertools.zip_longest(*per_kind.values())):
        for kind, slots in zip(per_kind, group):
            if slots is not None:
                facts.append({"fact_id": f"{family}_{kind}_{index:03d}", "kind": kind, **slots})
    return facts
