"""deltatune.rlaif: reinforcement learning from AI feedback — a judge model labels preferences.

    deltatune label prompts.jsonl --model runs/sft --judge smollm2-135m --out prefs.jsonl
    deltatune label --agreement builtin:orgfacts/prefs_test --judge smollm2-135m

    from deltatune.rlaif import LocalJudge, EndpointJudge, label_prompts, judge_agreement
    judge = LocalJudge.from_target("smollm2-135m")
    judge.prefer(prompt, a, b)     # P(a is better than b) by the rubric, order-swapped
    judge.score(prompt, a)         # P(a is good by the rubric): an RL reward (log_odds for logits)

The policy samples k replies per prompt; a judge compares them by a rubric (helpful, correct,
concise unless --rubric replaces it); the winner and loser become a {"prompt", "chosen",
"rejected"} row for `recipe: rm` / `recipe: dpo`.

Modules: judges (the `Judge` protocol every judge meets, the rubric, the judge prompts, verdict
parsing), judge_local (a local model: verdict log-probabilities from one batched forward, both
orders averaged), judge_endpoint (any OpenAI-compatible server, e.g. `deltatune serve`: greedy
verdicts in both orders, bounded retries), label (sampling, round-robin choice, the resumable
output file, `judge_agreement`), cli (`deltatune label`). Names are imported lazily so
`deltatune --help` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Judge": "judges",
    "DEFAULT_RUBRIC": "judges",
    "log_odds": "judges",
    "LocalJudge": "judge_local",
    "EndpointJudge": "judge_endpoint",
    "JudgeUnavailable": "judge_endpoint",
    "LabelSettings": "label",
    "label_prompts": "label",
    "judge_agreement": "label",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deltatune.rlaif' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deltatune.rlaif.{_EXPORTS[name]}"), name)
