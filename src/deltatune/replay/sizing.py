"""How much replay, and how heavy: sized to the user's data, so that protection against
forgetting never drowns the thing being learned.

    chosen = choose_replay(replay_examples, n_user=48, ratio=0.5, seed=0)   # 24 of 104
    weight = auto_weight(user_tokens=768, replay_tokens=3600)               # 1.28

Why: the default recipe was tuned on orgfacts (810 rows): 104 replay answers at 5x loss
weight protected the general probe there. On a user's 48 rows the same 104 answers at 5x
carried ~135x the loss weight of the user's own tokens (long distilled answers vs. one-line
facts) and the run learnt nothing (held-out 0% -> 0.7%), while costing most of the compute.

- Count: `data.replay_ratio` replay examples per training example (a seeded subset of the
  answered prompts; all of them when there are fewer), at least MIN_REPLAY.
- Weight (`data.replay_weight: auto`): the replay's labelled tokens together weigh
  REPLAY_SHARE times the user's labelled tokens, the per-token weight clamped to WEIGHT_RANGE.
  On orgfacts this gives the 5x the default was tuned with (16k replay tokens vs 13k user
  tokens); on 48 short rows it gives ~1.3x over 24 answers.
"""

from __future__ import annotations

import math
import random

from deltatune.data.labels import IGNORE_INDEX

REPLAY_SHARE = 6.0
WEIGHT_RANGE = (1.0, 5.0)
MIN_REPLAY = 16


def replay_count(n_user: int, available: int, ratio: float | None) -> int:
    """How many replay examples join `n_user` training examples (`ratio` None: all)."""
    if ratio is None:
        return available
    return min(available, max(MIN_REPLAY, math.ceil(ratio * n_user)))


def choose_replay(examples: list, n_user: int, ratio: float | None, seed: int) -> list:
    """A seeded subset of `examples` of `replay_count` size, in their original order."""
    k = replay_count(n_user, len(examples), ratio)
    if k >= len(examples):
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), k))
    return [examples[i] for i in keep]


def truncate_answers(examples: list[dict], max_answer_tokens: int | None) -> list[dict]:
    """Copies of tokenised `examples` cut after their first `max_answer_tokens` labelled
    tokens (None: unchanged). The cut drops the end-of-turn label too, so the model is
    never taught to stop there; it is only held to the base's first tokens, which set a
    reply's style. Call before teacher targets are attached (they follow the tokens)."""
    if max_answer_tokens is None:
        return list(examples)
    out = []
    for example in examples:
        labelled = [i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX]
        if len(labelled) <= max_answer_tokens:
            out.append(dict(example))
            continue
        cut = labelled[max_answer_tokens - 1] + 1
        out.append(dict(example, input_ids=example["input_ids"][:cut], labels=example["labels"][:cut]))
    return out


def labelled_tokens(examples: list[dict]) -> int:
    """Tokens that carry a loss (labels != -100) over tokenised examples."""
    return sum(sum(1 for label in ex["labels"] if label != IGNORE_INDEX) for ex in examples)


def auto_weight(user_tokens: int, replay_tokens: int) -> float:
    """Per-token replay weight giving the replay REPLAY_SHARE x the user's loss mass."""
    if replay_tokens <= 0:
        return 1.0
    low, high = WEIGHT_RANGE
    return round(min(high, max(low, REPLAY_SHARE * user_tokens / replay_tokens)), 3)


def weigh_replay(chosen: list[dict], user_examples: list[dict], weight: float | str) -> float:
    """Put `data.replay_weight` on the chosen replay examples (`auto`: `auto_weight` from the
    labelled tokens of both sides) and return the weight used; the recipe and the estimate
    share this rule."""
    if weight == "auto":
        weight = auto_weight(labelled_tokens(user_examples), labelled_tokens(chosen))
    if weight != 1.0:
        for example in chosen:
            example["loss_weight"] = weight
    return weight
