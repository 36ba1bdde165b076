"""The built-in `arith` dataset: short arithmetic word problems with an integer answer.

    records = load_records("builtin:arith/train")   # 2000 records; builtin:arith/test has 200
    # each record: {"prompt": "Tom has 7 apples and buys 5 more. How many apples does Tom have
    #               now? Answer with just the number.", "answer": "12"}
    deltatune data make arith --out data/arith

For rule-rewarded RL: a reply earns the reward when the reference integer appears in it as a
standalone number (regex `(?<!\\d)ANSWER(?!\\d)`; `scripts/measure_arith_base.py` holds that
rule and measures it). Problems mix addition, subtraction and small multiplication over a few
sentence templates (PROBLEMS); no answer equals a number of its own prompt, so repeating the
question never earns the reward.

Difficulty is calibrated to the embedded SmolLM2-135M-Instruct so RL has something to learn and
room to improve (base rate aimed at 20-35%): greedy, one user turn through the chat template
(its default system prompt), the rule above, on the test split:
    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_arith_base.py --split test
    -> 53/200 = 26.5% at 32 new tokens (add 35.8%, sub 11.9%, mul 31.8%)
    ... --max-new-tokens 64 -> 71/200 = 35.5% (add 53.7%, sub 17.9%, mul 34.8%)
    ... --split train --limit 200 -> 49/200 = 24.5% at 32 new tokens (same mix, same ranges)
The model mostly restates the problem and works it out ("so Ken has 16 - 2 = 14 stickers
left"), often cut off before the result at 32 tokens; subtraction it gets wrong most.
Two-digit numbers (addends 12-89, subtracting from 30-99) gave 4.5% and 0%, hence the small
ranges below; factors 3-15 by 3-12 keep multiplication from the easy 60.6% of 2-12 by 2-12.
Changing a range or template changes the rate: measure again and update these lines.

The problems come from one `random.Random(SEED)`, the operations taking turns (an even mix).
The test split is drawn first, each (operation, a, b) once; train never reuses a test
problem's operation and numbers (so test accuracy is about unseen problems, not recalled ones)
and repeats its own only under other names, objects or wording, since the small ranges hold
few pairs (about 220 remain for train). No prompt occurs twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from deltatune.errors import DeltatuneError

SPLITS = ("train", "test")
SEED = 31
TRAIN_SIZE = 2000
TEST_SIZE = 200
SUFFIX = " Answer with just the number."

NAMES = ("Tom", "Anna", "Ravi", "Mia", "Leo", "Sara", "Omar", "Lena", "Ken", "Zoe", "Ivan", "Maya")
# (plural noun, container for multiplication)
OBJECTS = (("apples", "bags"), ("pencils", "boxes"), ("stickers", "sheets"), ("marbles", "jars"),
           ("cookies", "trays"), ("books", "shelves"), ("coins", "purses"), ("flowers", "vases"))


@dataclass(frozen=True)
class Operation:
    """One kind of problem: how to draw its two numbers, its answer, its sentence templates."""

    name: str
    draw: Callable[[random.Random], tuple[int, int]]
    solve: Callable[[int, int], int]
    templates: tuple[str, ...]  # slots: {name} {a} {b} {obj} {box}


def _draw_add(rng: random.Random) -> tuple[int, int]:
    return rng.randint(2, 20), rng.randint(2, 9)


def _draw_sub(rng: random.Random) -> tuple[int, int]:
    a = rng.randint(6, 20)
    return a, rng.randint(2, a - 2)


def _draw_mul(rng: random.Random) -> tuple[int, int]:
    return rng.randint(3, 15), rng.randint(3, 12)


PROBLEMS: tuple[Operation, ...] = (
    Operation("add", _draw_add, lambda a, b: a + b, (
        "{name} has {a} {obj} and buys {b} more. How many {obj} does {name} have now?",
        "{name} picked {a} {obj} in the morning and {b} in the afternoon. How many {obj} did {name} pick in total?",
        "A shop sold {a} {obj} on Monday and {b} on Tuesday. How many {obj} did it sell on the two days?",
    )),
    Operation("sub", _draw_sub, lambda a, b: a - b, (
        "{name} had {a} {obj} and gave {b} to a friend. How many {obj} does {name} have left?",
        "There are {a} {obj} in a box. {name} takes out {b}. How many {obj} are left in the box?",
        "{name} needs {a} {obj} and already has {b}. How many more {obj} does {name} need?",
    )),
    Operation("mul", _draw_mul, lambda a, b: a * b, (
        "{name} has {a} {box} with {b} {obj} in each. How many {obj} does {name} have in total?",
        "There are {a} {box} and each holds {b} {obj}. How many {obj} are there altogether?",
    )),
)


def build_problems(seed: int = SEED) -> dict[str, list[dict]]:
    """Both splits in memory: {"train": [...], "test": [...]}, the same lists for the same seed.

    Test problems come first, each (operation, a, b) once; train problems never use a test
    problem's numbers for its operation (they may share numbers among themselves, with other
    names and wording: small multiplication has few pairs). No prompt occurs twice."""
    rng = random.Random(seed)
    test_keys: set[tuple[str, int, int]] = set()
    prompts: set[str] = set()
    splits: dict[str, list[dict]] = {"test": [], "train": []}
    for split, size in (("test", TEST_SIZE), ("train", TRAIN_SIZE)):
        for _ in range(50 * size):  # bounded: number ranges too narrow for the sizes fail loudly
            if len(splits[split]) == size:
                break
            op = PROBLEMS[len(splits[split]) % len(PROBLEMS)]  # the operations take turns: an even mix
            a, b = op.draw(rng)
            answer = op.solve(a, b)
            obj, box = rng.choice(OBJECTS)
            text = rng.choice(op.templates).format(name=rng.choice(NAMES), a=a, b=b, obj=obj, box=box) + SUFFIX
            if answer in (a, b) or text in prompts or (op.name, a, b) in test_keys:
                continue  # answered by repeating the question, a repeated prompt, a test problem's numbers
            if split == "test":
                test_keys.add((op.name, a, b))
            prompts.add(text)
            splits[split].append({"prompt": text, "answer": str(answer)})
        if len(splits[split]) < size:
            raise DeltatuneError(f"arith: only {len(splits[split])} of {size} distinct {split} problems fit "
                                 f"the number ranges in {__file__}; widen the ranges of the _draw_* functions")
    return splits


def split_records(split: str) -> list[dict]:
    """One split's records (`builtin:arith/SPLIT`); both come from one random stream."""
    return build_problems()[split]
