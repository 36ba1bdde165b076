"""Cache the base model's evaluation: the same base, data and settings give the same numbers.

    key = base_eval_key(model, tokenizer, cfg.data, cfg.eval, splits)   # what the numbers depend on
    before = cached_base_eval(key, lambda: evaluate(model, tokenizer, cfg.data, cfg.eval, splits))

Why: a recipe measures the base model before training on every run (about 3.5 minutes for the
demo on 2 CPU cores), and the result is the same each time. The key gathers everything that
result depends on — the base weights (fingerprinted without any installed method's tensors, so
the key is the same before and after a method is installed; `deltatune.models.fingerprint`),
the model config, the tokenizer, each split's records, the eval and data settings that change
prompting, tokenisation or scoring, dtype and device type, the torch and transformers versions
and `EVAL_CODE_VERSION` — so a stale entry cannot be hit; bump that constant whenever the
evaluation code changes what it reports.

Entries live in $DELTATUNE_HOME/base-eval/<24 hex of the key's sha256>.json as
{"key": ..., "result": ...}, written atomically; an unreadable or mismatching file is
recomputed and replaced. DELTATUNE_NO_CACHE=1 skips reading (the fresh result is still stored).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

EVAL_CODE_VERSION = 1  # bump when the evaluation (deltatune.eval.runner and below) changes its numbers
NO_CACHE_ENV = "DELTATUNE_NO_CACHE"
# config fields that switch outputs of a forward on or off but do not change any number
_RUNTIME_CONFIG_KEYS = ("use_cache", "output_attentions", "output_hidden_states", "return_dict")


def cached_base_eval(key_parts: dict, compute: Callable[[], dict]) -> dict:
    """`compute()`'s result, read from the cache when an entry for `key_parts` exists, else
    computed and stored. Always a fresh copy (callers may mutate it), the same JSON types
    whether it came from the cache or not."""
    path = cache_path(key_parts)
    key = json.loads(_canonical(key_parts))  # the key as it reads back from JSON
    if os.environ.get(NO_CACHE_ENV, "") in ("", "0"):
        cached = _read(path, key)
        if cached is not None:
            print(f"base model evaluation: cached ({path})", flush=True)
            return cached
    result = compute()
    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as exc:
        print(f"base model evaluation: not cached, the result is not JSON ({exc})", flush=True)
        return json.loads(json.dumps(result, default=str))
    from deltatune.atomic import write_json_atomic

    try:
        write_json_atomic(path, {"key": key, "result": json.loads(text)})
    except OSError as exc:
        print(f"base model evaluation: could not write the cache {path} ({exc})", flush=True)
    return json.loads(text)


def cache_path(key_parts: dict) -> Path:
    """Where the entry for `key_parts` lives (under deltatune_home()/base-eval)."""
    from deltatune.models.embedded import deltatune_home

    name = hashlib.sha256(_canonical(key_parts).encode()).hexdigest()[:24]
    return deltatune_home() / "base-eval" / f"{name}.json"


def base_eval_key(model, tokenizer, cfg_data, cfg_eval, splits: dict[str, str]) -> dict:
    """Everything the base model's `evaluate(model, tokenizer, cfg_data, cfg_eval, splits)`
    depends on, as a JSON-able dict (hashes where the thing itself is big)."""
    import torch
    import transformers

    from deltatune.models.device import model_device
    from deltatune.models.fingerprint import base_weights_fingerprint

    config = {k: v for k, v in model.config.to_dict().items() if k not in _RUNTIME_CONFIG_KEYS}
    return {
        "eval_code_version": EVAL_CODE_VERSION,
        "base_weights": base_weights_fingerprint(model),
        "model": getattr(model.config, "_name_or_path", ""),
        "model_config": _sha256(config),
        "dtype": str(getattr(model, "dtype", None)),
        "device_type": model_device(model).type,
        "tokenizer": _tokenizer_key(tokenizer),
        "splits": {name: {"spec": spec, "records": _records_hash(spec)} for name, spec in sorted(splits.items())},
        "eval": {k: getattr(cfg_eval, k) for k in
                 ("max_new_tokens", "max_examples", "probe_samples", "sample_temperature", "batch_size", "metrics")},
        "data": {k: getattr(cfg_data, k, None) for k in ("system_prompt", "max_length", "format", "train_on_prompt", "pack")},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def _tokenizer_key(tokenizer) -> dict:
    """Chat template, vocabulary and the special ids that padding and stopping use."""
    return {
        "chat_template": _sha256(getattr(tokenizer, "chat_template", None)),
        "vocab_size": len(tokenizer),
        "vocab": _sha256(tokenizer.get_vocab()),
        "special_ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
    }


def _records_hash(spec: str) -> str:
    """sha256 of a split's records, without the private `_origin` (where each came from)."""
    from deltatune.data import load_records
    from deltatune.data.sources import ORIGIN

    return _sha256([{k: v for k, v in r.items() if k != ORIGIN} for r in load_records(spec)])


def _read(path: Path, key) -> dict | None:
    """The cached result for `key`, or None (missing; unreadable or not this key: said once)."""
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entry, dict) or not isinstance(entry.get("result"), dict):
            raise ValueError("no result in it")
        if entry.get("key") != key:
            raise ValueError("it was stored for another key")
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        print(f"base model evaluation: ignoring the cache {path} ({exc}); measuring again", flush=True)
        return None
    return entry["result"]


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _sha256(obj) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()
