"""The reward sources behind `rl.reward`: rules, python functions, a judge model, errors."""

from __future__ import annotations

import pytest

from deltatune.errors import DeltatuneError
from deltatune.rl.rewards import build_reward, contains_answer

TURNS = [[{"role": "user", "content": "What is 7 + 5?"}]]


@pytest.mark.parametrize("answer, reply, expected", [
    ("12", "The answer is 12.", True),
    ("12", "125 apples", False),
    ("12", "It is 112", False),
    ("12", "12", True),
    ("Paris", "I think it is paris!", True),
    ("Paris", "Lyon", False),
])
def test_contains_matches_whole_numbers_and_words(answer, reply, expected):
    assert contains_answer(answer, reply) is expected


def test_rule_rewards_read_the_rows_reference_answer():
    contains, exact = build_reward("contains"), build_reward("exact")
    rows = [{"prompt": "What is 7 + 5?", "answer": "12"}] * 2
    assert contains(rows, TURNS * 2, ["It is 12.", "It is 13."]) == [1.0, 0.0]
    assert exact(rows, TURNS * 2, ["12", "It is 12."]) == [1.0, 0.0]
    with pytest.raises(DeltatuneError, match="reference answer"):
        contains([{"prompt": "q"}], TURNS, ["x"])


def test_a_judge_model_scores_replies_as_probabilities(tiny_llama_dir):
    judge = build_reward(f"judge:{tiny_llama_dir}")
    scores = judge([{"prompt": "q"}] * 2, TURNS * 2, ["12", "a long wrong reply"])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_unknown_rewards_say_what_is_accepted():
    with pytest.raises(DeltatuneError, match="not a run dir and not a known reward"):
        build_reward("containz")
    with pytest.raises(DeltatuneError, match="rl.reward is not set"):
        build_reward(None)
