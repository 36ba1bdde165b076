"""Self-distillation replay: mix the base model's own answers to general prompts into training.

    records = self_replay_records(model, tokenizer, "builtin:general/prompts", system_prompt=None)

Why: tuning on one narrow domain makes a small model forget (measured on the default recipe:
the general probe fell 28 points without replay). Mixing general data back in is the usual
remedy; what we can always get offline is the base model's own behaviour. Before the method
is applied, the base model answers each prompt (greedy); the answers become ordinary SFT
examples, so training keeps the model close to what it already said outside the new domain
(self-distillation, cf. Yang et al. 2024, "Self-Distillation Bridges Distribution Gap in
Language Model Fine-Tuning"). Answers cut off by `max_new_tokens` are dropped: training on
them would teach the model to stop mid-sentence.

Generating costs about a minute on 2 CPU cores for 145 prompts, so results are cached under
$DELTATUNE_HOME/replay/, keyed by the prompts, the settings and a fingerprint of the base weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm.auto import tqdm

from deltatune.atomic import write_text_atomic
from deltatune.data.formats import alpaca_user_text, resolve_format, to_conversation
from deltatune.data.sources import load_records
from deltatune.errors import DeltatuneError


def self_replay_records(model, tokenizer, spec: str, system_prompt: str | None = None,
                        max_new_tokens: int = 128, batch_size: int = 32, config_key: str = "data.replay") -> list[dict]:
    """`messages` records: each prompt of `spec` with the base model's own greedy answer."""
    prompts = [_user_text(r) for r in load_records(spec)]
    key = _cache_key(model, prompts, system_prompt, max_new_tokens)
    cache = cache_dir() / f"{key}.jsonl"
    if cache.is_file():
        records = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    else:
        tqdm.write(f"self-distillation replay: the base model answers {len(prompts)} prompts from {spec} (cached after this)")
        records = _generate(model, tokenizer, prompts, system_prompt, max_new_tokens, batch_size)
        # atomic: a run killed mid-write must not leave a short cache that later runs trust
        write_text_atomic(cache, "".join(json.dumps(r) + "\n" for r in records))
    write_cache_meta(cache, model, prompts, system_prompt, max_new_tokens, len(records))  # a hit too: older caches gain one
    if not records:
        hint = ("raise data.replay_max_new_tokens" if config_key == "data.replay"
                else "check that the model answers these prompts")
        raise DeltatuneError(f"{config_key} {spec}: the base model finished no answer within {max_new_tokens} tokens; {hint}")
    return [dict(r, _origin=f"replay:{spec}#{i}") for i, r in enumerate(records)]


def prompts_digest(prompts: list[str]) -> str:
    """sha256 of the prompt texts in order: the part of the cache key the estimate can recompute."""
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()


def write_cache_meta(cache: Path, model, prompts: list[str], system_prompt, max_new_tokens: int, n: int) -> None:
    """`<key>.meta.json` beside a replay cache: which model path and settings produced it.

    The cache key hashes the base weights, which `deltatune estimate` never reads; this sidecar
    lets it find the answers a run will train on from the model's path and the settings alone
    (deltatune.estimate.replay)."""
    meta = {"model": str(getattr(model.config, "_name_or_path", "")), "base": base_weights(model),
            "prompts_sha256": prompts_digest(prompts), "system_prompt": system_prompt,
            "max_new_tokens": max_new_tokens, "records": n}
    path, text = cache.with_suffix(".meta.json"), json.dumps(meta, indent=1) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)


def base_weights(model) -> dict:
    """How the answering weights were held: the floating dtype and the quantisation (4 or 8 bits,
    or None). A QLoRA run's base answers in NF4, so its answers are its own, not the fp32 base's."""
    from deltatune.methods.qlora.quantise import bits_of

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    bits = {b for b in map(bits_of, model.modules()) if b}
    return {"dtype": str(dtype).removeprefix("torch."), "quantised_bits": max(bits) if bits else None}


def _user_text(record: dict) -> str:
    """A prompt record in any chat format -> its first user turn's text."""
    if "instruction" in record:
        return alpaca_user_text(record)
    conv = to_conversation(record, resolve_format([record], "auto"))
    return next(m["content"] for m in conv if m["role"] == "user")


def _generate(model, tokenizer, prompts, system_prompt, max_new_tokens, batch_size) -> list[dict]:
    from deltatune.generation import SamplingParams, chat_prompt_ids, generate

    def conversation(prompt: str) -> list[dict]:
        head = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return head + [{"role": "user", "content": prompt}]

    ids = [chat_prompt_ids(tokenizer, conversation(p)) for p in prompts]
    params = SamplingParams(max_new_tokens=max_new_tokens)
    records = []
    for start in range(0, len(prompts), batch_size):
        done = generate(model, tokenizer, ids[start : start + batch_size], params)
        for prompt, completion in zip(prompts[start : start + batch_size], done):
            if completion.finish_reason == "stop" and completion.text.strip():
                records.append({"messages": conversation(prompt) + [{"role": "assistant", "content": completion.text.strip()}]})
    return records


def _cache_key(model, prompts, system_prompt, max_new_tokens) -> str:
    """Same prompts + settings + base weights -> same key. The weights are fingerprinted without
    any installed method's own tensors (`deltatune.models.fingerprint`), so the base switched
    off under a method hits the cache its bare self filled, before and after training."""
    from deltatune.models.fingerprint import base_weights_fingerprint

    digest = hashlib.sha256()
    digest.update(json.dumps([prompts, system_prompt, max_new_tokens]).encode())
    digest.update(json.dumps([getattr(model.config, "_name_or_path", ""), base_weights_fingerprint(model)]).encode())
    return digest.hexdigest()[:24]


def cache_dir() -> Path:
    """$DELTATUNE_HOME/replay: the answer caches and their sidecars."""
    from deltatune.models.embedded import deltatune_home

    return deltatune_home() / "replay"

