"""Held-out numbers of an RL run: greedy replies to `data.test` prompts, scored by the run's reward.

    held_out_reward(model, tokenizer, records, reward, cfg) -> {"mean_reward", "n", "examples"}

With a rule reward (contains / exact, 1 or 0 per reply) the mean reward is the accuracy. Greedy
decoding makes the number a property of the weights, not of a sampling draw.
"""

from __future__ import annotations

from deltatune.generation import SamplingParams, chat_prompt_ids, generate
from deltatune.rl.prompts import prompt_turns
from deltatune.training.progress import say


def held_out_reward(model, tokenizer, records: list[dict], reward, cfg) -> dict:
    if cfg.eval.max_examples:
        records = records[: cfg.eval.max_examples]
    turns = [prompt_turns(r, cfg.data.system_prompt) for r in records]
    texts: list[str] = []
    size = cfg.eval.batch_size
    for start in range(0, len(turns), size):
        ids = [chat_prompt_ids(tokenizer, t) for t in turns[start:start + size]]
        texts += [c.text for c in generate(model, tokenizer, ids, SamplingParams(max_new_tokens=cfg.rl.max_new_tokens))]
    scores = reward(records, turns, texts)
    mean = sum(scores) / max(len(scores), 1)
    say(f"held-out: mean reward {mean:.4f} over {len(scores)} prompts")
    examples = [{"prompt": t[-1]["content"], "reply": x, "reward": s} for t, x, s in zip(turns[:5], texts, scores)]
    return {"mean_reward": mean, "n": len(scores), "examples": examples}
