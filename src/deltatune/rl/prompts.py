"""Prompt records for RL: the turns to answer, the reference answer, each iteration's prompts.

    turns = prompt_turns(record, system_prompt)      # [{"role": "user", "content": ...}]
    reference_answer(record)                         # "12" (the `answer` / `output` field) or None
    rows = iteration_prompts(records, iteration, per_step, seed)   # the same rows on every run

A record is `{"prompt": str | messages}` (plus `answer` for rule rewards), or any QA record
(alpaca / messages) whose question `deltatune.data.formats.qa_prompt_messages` finds.
Preference rows (`prompt` + `chosen` + `rejected`) work too: their prompt is used.
"""

from __future__ import annotations

import random

from deltatune.data.formats import qa_prompt_messages
from deltatune.data.sources import origin
from deltatune.errors import DeltatuneError


def prompt_turns(record: dict, system_prompt: str | None = None) -> list[dict]:
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        turns = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list):
        turns = [{"role": t["role"], "content": t["content"]} for t in prompt]
    elif "instruction" in record or "messages" in record:
        return qa_prompt_messages(record, system_prompt)
    else:
        raise DeltatuneError(f"{origin(record)}: an RL prompt row needs 'prompt' (a string or message list), "
                             f"or 'instruction' / 'messages'")
    if system_prompt is not None and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system_prompt})
    return turns


def reference_answer(record: dict) -> str | None:
    for key in ("answer", "output", "chosen"):
        if isinstance(record.get(key), str):
            return record[key]
    return None


def iteration_prompts(records: list[dict], iteration: int, per_step: int, seed: int) -> list[dict]:
    """The `per_step` prompt rows of iteration `iteration` (0-based): consecutive slices of a
    seeded shuffle per pass over the data, so a resumed run samples the same prompts."""
    out, start = [], iteration * per_step
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), len(records))
        order = list(range(len(records)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        take = min(per_step - len(out), len(records) - offset)
        out += [records[i] for i in order[offset:offset + take]]
    return out
