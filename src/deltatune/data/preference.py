"""Preference pairs: records -> (prompt, chosen, rejected) conversations -> token ids -> batches.

    pairs = build_preference_dataset(load_records("builtin:orgfacts/prefs_train"), tokenizer, cfg.data)
    pairs[0]   # {"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "length"}
    batch = collate_pairs([pairs[i] for i in idx], pad_id)
    # (2B, T): rows 0..B-1 are the chosen answers, rows B..2B-1 the rejected ones, so one forward
    # scores both; labels are -100 everywhere except the final answer (and its end token)

Two record layouts, checked with file:line errors:
- plain: `prompt`, `chosen`, `rejected` strings (optional `system`);
- conversational (TRL's): `chosen` / `rejected` as message lists ending in the assistant's
  answer, with an explicit `prompt` message list or (implicit prompt) the turns both lists share.

Only the final answer is labelled: the shared prompt, history turns included, cancels in a
pairwise loss, and counting it would distort the length-normalised losses (SimPO, ORPO).
"""

from __future__ import annotations

import torch

from deltatune.data.batching import collate
from deltatune.data.formats import Conversation
from deltatune.data.labels import IGNORE_INDEX
from deltatune.data.sources import origin
from deltatune.data.tokenize import TokenizedDataset, encode_conversation, with_system_prompt
from deltatune.errors import DeltatuneError

__all__ = ["build_preference_dataset", "collate_pairs", "pairs_in", "preference_conversations"]


def preference_conversations(record: dict) -> tuple[Conversation, str, str]:
    """(prompt turns, chosen answer, rejected answer) of one record, in either layout."""
    for key in ("chosen", "rejected"):
        if key not in record or record[key] is None:
            raise DeltatuneError(f"{origin(record)}: missing required field '{key}' (a preference row needs "
                                 f"'prompt', 'chosen' and 'rejected')")
    chosen, rejected = record["chosen"], record["rejected"]
    if isinstance(chosen, str) and isinstance(rejected, str):
        prompt = _plain_prompt(record)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        prompt, chosen, rejected = _conversational(record, chosen, rejected)
    else:
        raise DeltatuneError(f"{origin(record)}: 'chosen' and 'rejected' must both be strings or both be "
                             f"message lists, got {type(chosen).__name__} and {type(rejected).__name__}")
    if chosen.strip() == rejected.strip():
        raise DeltatuneError(f"{origin(record)}: 'chosen' and 'rejected' are the same answer; a pair must "
                             f"differ (drop the row or fix its rejected answer)")
    return prompt, chosen, rejected


def _plain_prompt(record: dict) -> Conversation:
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DeltatuneError(f"{origin(record)}: missing required field 'prompt' (a non-empty string)")
    turns = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    return [*turns, {"role": "user", "content": prompt}]


def _conversational(record: dict, chosen: list, rejected: list) -> tuple[Conversation, str, str]:
    where = origin(record)
    chosen_turns, rejected_turns = _turns(chosen, where, "chosen"), _turns(rejected, where, "rejected")
    if "prompt" in record and record["prompt"] is not None:
        prompt = _turns(record["prompt"], where, "prompt") if isinstance(record["prompt"], list) \
            else [{"role": "user", "content": str(record["prompt"])}]
    else:  # implicit prompt: every turn before the answers
        prompt = chosen_turns[:-1]
        if rejected_turns[:-1] != prompt:
            raise DeltatuneError(f"{where}: 'chosen' and 'rejected' must share every turn before the final "
                                 f"answer (or give the prompt turns as 'prompt')")
        chosen_turns, rejected_turns = chosen_turns[-1:], rejected_turns[-1:]
    for key, turns in (("chosen", chosen_turns), ("rejected", rejected_turns)):
        if turns[-1]["role"] != "assistant":
            raise DeltatuneError(f"{where}: the last turn of '{key}' must be the assistant's answer")
    if not prompt:
        raise DeltatuneError(f"{where}: no prompt turns before the answers")
    return prompt, chosen_turns[-1]["content"], rejected_turns[-1]["content"]


def _turns(value, where: str, key: str) -> Conversation:
    if not isinstance(value, list) or not value:
        raise DeltatuneError(f"{where}: '{key}' must be a non-empty list of {{role, content}} messages")
    turns = []
    for i, turn in enumerate(value):
        if not (isinstance(turn, dict) and isinstance(turn.get("role"), str) and isinstance(turn.get("content"), str)):
            raise DeltatuneError(f"{where}: {key}[{i}] must be an object with string 'role' and 'content'")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns


def final_answer_only(labels: list[int]) -> list[int]:
    """Labels with only the last contiguous labelled run kept (the final answer + end token)."""
    end = len(labels)
    while end and labels[end - 1] == IGNORE_INDEX:
        end -= 1
    start = end
    while start and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return [IGNORE_INDEX] * start + labels[start:end] + [IGNORE_INDEX] * (len(labels) - end)


def _encode_answer(tokenizer, prompt: Conversation, answer: str, max_length: int) -> tuple[list[int], list[int], bool]:
    ids, labels = encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": answer}])
    labels = final_answer_only(labels)
    cut = len(ids) > max_length
    return ids[:max_length], labels[:max_length], cut


def build_preference_dataset(records: list[dict], tokenizer, data_cfg) -> TokenizedDataset:
    """Tokenise preference rows; a pair whose answer is cut away entirely by `max_length` is dropped."""
    if not records:
        raise DeltatuneError("the preference dataset is empty (no records)")
    system_prompt = getattr(data_cfg, "system_prompt", None)
    examples, truncated, dropped = [], 0, 0
    for record in records:
        prompt, chosen, rejected = preference_conversations(record)
        prompt = with_system_prompt(prompt, system_prompt)
        c_ids, c_labels, c_cut = _encode_answer(tokenizer, prompt, chosen, data_cfg.max_length)
        r_ids, r_labels, r_cut = _encode_answer(tokenizer, prompt, rejected, data_cfg.max_length)
        truncated += c_cut or r_cut
        if all(x == IGNORE_INDEX for x in c_labels) or all(x == IGNORE_INDEX for x in r_labels):
            dropped += 1
            continue
        examples.append({"chosen_input_ids": c_ids, "chosen_labels": c_labels, "rejected_input_ids": r_ids,
                         "rejected_labels": r_labels, "length": max(len(c_ids), len(r_ids))})
    if not examples:
        raise DeltatuneError(f"all {len(records)} preference pairs lost their answers at data.max_length="
                             f"{data_cfg.max_length}; raise data.max_length")
    stats = {"format": "preference", "count": len(examples), "truncated": truncated, "dropped": dropped,
             "max_length": data_cfg.max_length}
    return TokenizedDataset(examples, stats)


def collate_pairs(examples: list[dict], pad_id: int) -> dict:
    """(2B, T) right-padded batch: the B chosen answers, then the B rejected ones (same order)."""
    rows = [{"input_ids": ex[f"{side}_input_ids"], "labels": ex[f"{side}_labels"]}
            for side in ("chosen", "rejected") for ex in examples]
    batch = collate(rows, pad_id)
    for key in ("ref_chosen", "ref_rejected"):  # reference log-probs computed once (precompute_ref)
        if all(key in ex for ex in examples):
            batch[key] = torch.tensor([float(ex[key]) for ex in examples], dtype=torch.float32)  # (B,)
    return batch


def pairs_in(batch: dict) -> int:
    """Units of a pair batch: its pairs (half its rows)."""
    return batch["input_ids"].shape[0] // 2
