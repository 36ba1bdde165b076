"""Replay examples for the estimate, before the base model has answered anything.

    examples, notes, unanswered = replay_examples(cfg, tokenizer, train_set)

The recipe's replay (`recipes.sft._with_replay`) is the base model's own answers to the
`data.replay` prompts, cached under $DELTATUNE_HOME/replay once generated. Their lengths decide
the replay batches, so, per prompt source:

- cached answers: the cache is keyed by a fingerprint of the base weights, which the estimate
  does not read. Each cache has a sidecar (`<key>.meta.json`: the model's path, how its weights
  were held (dtype, quantisation: QLoRA's base answers in NF4), a digest of the prompts, the
  system prompt, `replay_max_new_tokens`); the cache whose sidecar matches this model path,
  this method's loading and these settings is taken (the newest, if the weights at that path changed).
  A cache without a sidecar (written before they existed) is taken when it is the only
  distinct one whose records are these prompts (in order, a subset: unfinished answers are
  dropped), with this system prompt and answers shorter than `data.replay_max_new_tokens`.
  Then the examples are the real ones.
- otherwise stand-ins: every prompt answered at the cap (`replay_max_new_tokens` labelled
  tokens), an upper bound; and the answering pass itself is part of the replay phase's memory.

Then, as the recipe does: `replay.sizing.choose_replay`, `truncate_answers`, top-k teacher
targets (placeholders of the right shape), the loss weight, `replay_repeat`.
"""

from __future__ import annotations

import hashlib
import json

from deltatune.data import build_sft_dataset, load_records
from deltatune.data.labels import IGNORE_INDEX
from deltatune.models.loader import resolve_model_path


def replay_examples(cfg, tokenizer, train_set) -> tuple[list[dict], list[str], bool]:
    """(the replay examples the run trains on, notes, whether some source is not answered yet)."""
    from deltatune.replay.sizing import choose_replay, truncate_answers, weigh_replay

    data = cfg.data
    messages_cfg = data.model_copy(update={"format": "messages"})
    examples, notes, unanswered = [], [], False
    for spec in data.replay_sources():
        prompts = [_user_text(r) for r in load_records(spec)]
        records = cached_answers(prompts, data.system_prompt, data.replay_max_new_tokens, tokenizer,
                                 model_path=resolve_model_path(cfg.model.name), base=expected_base_weights(cfg))
        if records is not None:
            examples += build_sft_dataset(records, tokenizer, messages_cfg).examples
            notes.append(f"replay {spec}: the base model's {len(records)} cached answers")
            continue
        unanswered = True
        head = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
        stand_ins = [{"messages": head + [{"role": "user", "content": p}, {"role": "assistant", "content": "x"}]}
                     for p in prompts]
        examples += [_long_answer(ex, data.replay_max_new_tokens)
                     for ex in build_sft_dataset(stand_ins, tokenizer, messages_cfg).examples]
        notes.append(f"replay {spec}: not answered yet, {len(prompts)} stand-ins with answers at the cap "
                     f"({data.replay_max_new_tokens} tokens): an upper bound")
    chosen = truncate_answers(choose_replay(examples, len(train_set), data.replay_ratio, cfg.train.seed),
                              data.replay_answer_tokens)
    if data.replay_topk:
        k = data.replay_topk
        for ex in chosen:
            ex["teacher_ids"] = [[0] * k if label != IGNORE_INDEX else None for label in ex["labels"]]
            ex["teacher_probs"] = [[1.0 / k] * k if label != IGNORE_INDEX else None for label in ex["labels"]]
    weigh_replay(chosen, train_set.examples, data.replay_weight)
    return chosen * data.replay_repeat, notes, unanswered


def cached_answers(prompts: list[str], system_prompt: str | None, max_new_tokens: int, tokenizer,
                   model_path: str | None = None, base: dict | None = None) -> list[dict] | None:
    """The replay cache's records for these prompts: the one whose sidecar names `model_path`
    and these settings, else the only distinct sidecar-less answer set that fits (module
    docstring); None otherwise."""
    from deltatune.replay.answers import cache_dir

    folder = cache_dir()
    by_meta = _cache_by_meta(folder, model_path, base, prompts, system_prompt, max_new_tokens)
    if by_meta is not None:
        return by_meta
    found: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        if path.with_suffix(".meta.json").is_file():
            continue  # a sidecar says what it is, and it was not this model with these settings
        records = _read_cache(path)
        if records and _fits(records, prompts, system_prompt, max_new_tokens, tokenizer):
            found[hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()] = records
    return next(iter(found.values())) if len(found) == 1 else None


def _cache_by_meta(folder, model_path, base, prompts, system_prompt, max_new_tokens) -> list[dict] | None:
    """The newest cache whose sidecar matches (module docstring), or None."""
    from deltatune.replay.answers import prompts_digest

    if not model_path:
        return None
    want = {"model": model_path, "base": base, "prompts_sha256": prompts_digest(prompts),
            "system_prompt": system_prompt, "max_new_tokens": max_new_tokens}
    matches = []
    for meta_path in folder.glob("*.meta.json"):
        cache = meta_path.with_name(meta_path.name[: -len(".meta.json")] + ".jsonl")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and all(meta.get(k) == v for k, v in want.items()) and cache.is_file():
            matches.append(cache)
    for cache in sorted(matches, key=lambda p: p.stat().st_mtime, reverse=True):
        records = _read_cache(cache)
        if records is not None:
            return records
    return None


def expected_base_weights(cfg) -> dict:
    """`replay.answers.base_weights` of the model this run's replay is answered by: the base as
    the method loads it (a method with its own loader, QLoRA, quantises it first)."""
    from deltatune.estimate.estimator import load_dtype
    from deltatune.methods.registry import get_method

    quantises = get_method(cfg.method).load_base is not None
    bits = getattr(cfg.method, "bits", None) if quantises else None
    return {"dtype": str(load_dtype(cfg)).removeprefix("torch."), "quantised_bits": bits}


def _read_cache(path) -> list[dict] | None:
    """A replay cache file's records, or None when it cannot be read."""
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return None


def _fits(records: list[dict], prompts: list[str], system_prompt, max_new_tokens: int, tokenizer) -> bool:
    remaining = iter(prompts)
    for record in records:
        turns = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(turns, list):
            return False
        by_role = {t.get("role"): t.get("content") for t in turns if isinstance(t, dict)}
        if by_role.get("system") != system_prompt or not isinstance(by_role.get("assistant"), str):
            return False
        if by_role.get("user") not in remaining:  # consumes the iterator: an ordered subsequence
            return False
        if len(tokenizer(by_role["assistant"], add_special_tokens=False)["input_ids"]) >= max_new_tokens:
            return False
    return True


def _user_text(record: dict) -> str:
    """A prompt record's first user turn (the text the base model is asked)."""
    from deltatune.data.formats import alpaca_user_text, resolve_format, to_conversation

    if "instruction" in record:
        return alpaca_user_text(record)
    conv = to_conversation(record, resolve_format([record], "auto"))
    return next(m["content"] for m in conv if m["role"] == "user")


def _long_answer(example: dict, answer_tokens: int) -> dict:
    """`example` (a one-token placeholder answer + end token) with `answer_tokens` labelled
    tokens: the placeholder repeated in front of the end token."""
    labelled = [i for i, label in enumerate(example["labels"]) if label != IGNORE_INDEX]
    if not labelled or len(labelled) >= answer_tokens:
        return dict(example)
    first, extra = labelled[0], answer_tokens - len(labelled)
    ids, labels = example["input_ids"], example["labels"]
    return dict(example, input_ids=ids[:first] + [ids[first]] * extra + ids[first:],
                labels=labels[:first] + [labels[first]] * extra + labels[first:])
