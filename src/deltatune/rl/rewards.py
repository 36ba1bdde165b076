"""The reward sources behind `rl.reward`: one table, one builder per kind.

    reward = build_reward("contains")             # 1.0 when the reference answer is in the reply
    reward = build_reward("runs/rm")              # a trained reward model's score
    reward = build_reward("python:my_rewards:length_penalty")   # fn(prompt, completion, record) -> float
    reward = build_reward("judge:smollm2-135m")   # P(reply is good) from a local judge model
    scores = reward(records, turns, completions)   # list[float], one per completion

Every source is checked when it is built — before any sampling — so a typo, a run dir that is
not a reward model or a missing function fails at once with what to do.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path

from deltatune.errors import DeltatuneError
from deltatune.rl.prompts import reference_answer

RewardFn = Callable[[list[dict], list[list[dict]], list[str]], list[float]]


def _normalise(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".!").split())


def contains_answer(answer: str, completion: str) -> bool:
    """The reference answer appears in the reply; a number only as a whole number (12 is not in 125)."""
    answer = answer.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", answer):
        return re.search(rf"(?<![\d.]){re.escape(answer)}(?![\d]|\.\d)", completion) is not None
    return _normalise(answer) in _normalise(completion)


def _rule(match: Callable[[str, str], bool]) -> RewardFn:
    def reward(records, turns, completions):
        out = []
        for record, completion in zip(records, completions):
            answer = reference_answer(record)
            if answer is None:
                raise DeltatuneError(f"{record.get('_origin', 'a prompt row')}: a rule reward needs the row's "
                                     f"reference answer ('answer' or 'output')")
            out.append(1.0 if match(answer, completion) else 0.0)
        return out

    return reward


def _reward_model(run_dir: str) -> RewardFn:
    from deltatune.preference.reward_model import RewardModel, check_reward_run

    check_reward_run(run_dir)
    model = RewardModel.load(run_dir)

    def reward(records, turns, completions):
        return model.score(list(zip(turns, completions)))

    return reward


def _python(spec: str) -> RewardFn:
    module_name, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise DeltatuneError(f"rl.reward: python:{spec}: cannot import {name!r} from {module_name!r} ({err}); "
                             f"write python:MODULE:FUNCTION with MODULE importable") from None

    def reward(records, turns, completions):
        return [float(fn(t, c, r)) for r, t, c in zip(records, turns, completions)]

    return reward


def _judge(spec: str) -> RewardFn:
    from deltatune.rlaif.judge_local import LocalJudge
    from deltatune.rlaif.judges import DEFAULT_RUBRIC

    judge = LocalJudge.from_target(spec, DEFAULT_RUBRIC)

    def reward(records, turns, completions):
        prompts = [t[-1]["content"] for t in turns]
        return list(judge.score_many(list(zip(prompts, completions))))

    return reward


RULES: dict[str, Callable[[str, str], bool]] = {
    "contains": contains_answer,
    "exact": lambda answer, completion: _normalise(answer) == _normalise(completion),
}


def build_reward(spec: str | None) -> RewardFn:
    """The reward function `rl.reward` names (see the module docstring)."""
    if not spec:
        raise DeltatuneError("rl.reward is not set: name a reward model run dir, contains, exact, "
                             "python:module:function or judge:MODEL")
    if spec in RULES:
        return _rule(RULES[spec])
    if spec.startswith("python:"):
        return _python(spec[len("python:"):])
    if spec.startswith("judge:"):
        return _judge(spec[len("judge:"):])
    if Path(spec).exists():
        return _reward_model(spec)
    raise DeltatuneError(f"rl.reward {spec!r}: not a run dir and not a known reward; use a `recipe: rm` run dir, "
                         f"{', '.join(RULES)}, python:module:function or judge:MODEL")
