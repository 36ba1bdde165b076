"""Batched text generation with our own decoding loop: greedy or temperature + nucleus sampling.

    from deltatune.generation import SamplingParams, chat_prompt_ids, generate
    ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": "Who founded Acme?"}])
    [done] = generate(model, tokenizer, [ids], SamplingParams(max_new_tokens=32))
    print(done.text, done.finish_reason)

How it works: prompts are left-padded into one batch (so every row's next token sits in the
last column), run once through the model to fill the KV cache, then extended one token per
step. Position ids count only real tokens (`cumsum(mask) - 1`, as HF `generate` does), so a
padded row gets exactly the positions it would get alone; greedy output therefore matches
`model.generate(do_sample=False)` token for token. Rows that finish (EOS, a stop string,
`max_new_tokens`) are dropped from the batch and the cache, so long stragglers do not pay for
finished rows. Each request samples from its own `torch.Generator`, so a seeded request gives
the same text whatever else shares its batch.

Used by evaluation (batched greedy QA) and by the server (streaming through `on_token`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from deltatune.errors import DeltatuneError
from deltatune.forward import next_token_logits

OnToken = Callable[[int, str], None]  # (prompt index, new text) for streaming


@dataclass
class SamplingParams:
    """How to decode one request. temperature 0 means greedy (top_p and seed then unused)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise DeltatuneError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")
        if self.temperature < 0:
            raise DeltatuneError(f"temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise DeltatuneError(f"top_p must be in (0, 1] (got {self.top_p})")
        self.stop = [s for s in self.stop if s]  # an empty stop string would stop at once


@dataclass
class Completion:
    """One finished request. `token_ids` are all generated ids (an ending EOS included);
    `text` is their decoded text without special tokens, cut before any stop string."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` rendered by the chat template, ending with the assistant cue.

    A tokenizer without a chat template gets a plain rendering ("System: ...\\nUser: ...
    \\nAssistant:") so base models still answer something sensible."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding here; v4 returned a plain list
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return tokenizer("\n".join(lines) + "\nAssistant:")["input_ids"]


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a completion: the tokenizer's EOS plus the generation config's."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    return ids


# ---------------------------------------------------------------------------------------------
# Per-request decoding state: token ids, stop handling and streamed-text bookkeeping


class _Request:
    def __init__(self, index: int, prompt_len: int, params: SamplingParams, device):
        self.index = index
        self.prompt_len = prompt_len
        self.params = params
        self.token_ids: list[int] = []
        self.text = ""
        self.emitted = 0  # chars of `text` already streamed
        self.finish_reason: str | None = None
        self.generator = None
        if params.temperature > 0:
            self.generator = torch.Generator(device=device)
            if params.seed is None:
                self.generator.seed()  # fresh OS entropy: unseeded requests differ
            else:
                self.generator.manual_seed(params.seed)

    def add(self, token: int, tokenizer, eos_ids: set[int], on_token: OnToken | None) -> None:
        """Record one generated token, detect stop conditions, stream the safe new text."""
        self.token_ids.append(token)
        if token in eos_ids:
            self.finish_reason = "stop"
        else:
            # Decode the whole completion and diff: token-by-token decoding breaks multi-byte
            # characters and tokenizers that merge spaces across token boundaries.
            self.text = tokenizer.decode(self.token_ids, skip_special_tokens=True)
            cut = _first_stop(self.text, self.params.stop)
            if cut is not None:
                self.text, self.finish_reason = self.text[:cut], "stop"
            elif len(self.token_ids) >= self.params.max_new_tokens:
                self.finish_reason = "length"
        if on_token is not None:
            self._stream(on_token)

    def _stream(self, on_token: OnToken) -> None:
        end = len(self.text)
        if self.finish_reason is None:
            # Hold back an incomplete UTF-8 character (decoded as U+FFFD) and any tail that
            # could still grow into a stop string: streamed text must never be taken back.
            while end > self.emitted and self.text[end - 1] == "\ufffd":
                end -= 1
            end -= _stop_prefix_overlap(self.text[:end], self.params.stop)
        if end > self.emitted:
            on_token(self.index, self.text[self.emitted : end])
            self.emitted = end

    def completion(self) -> Completion:
        return Completion(
            text=self.text,
            token_ids=list(self.token_ids),
            finish_reason=self.finish_reason or "length",
            prompt_tokens=self.prompt_len,
            completion_tokens=len(self.token_ids),
        )


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string begins in `text` (None if none)."""
    hits = [i for s in stops if (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _stop_prefix_overlap(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


# ---------------------------------------------------------------------------------------------
# Token choice


def _choose_tokens(logits: torch.Tensor, requests: list[_Request]) -> list[int]:
    """Next token per row. logits: (B, V) fp32 scores for the rows of `requests`."""
    greedy = logits.argmax(dim=-1).tolist()  # (B,)
    chosen = []
    for row, req in enumerate(requests):
        if req.generator is None:
            chosen.append(greedy[row])
        else:
            chosen.append(_sample(logits[row], req.params, req.generator))
    return chosen


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Temperature + nucleus (top-p) sampling from one row. logits: (V,)."""
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # (V,)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)  # (V,), (V,)
        cumulative = sorted_probs.cumsum(-1)
        # keep the smallest prefix whose mass reaches top_p: drop a token when the mass before
        # it already reaches top_p (so the most likely token always survives)
        drop = (cumulative - sorted_probs) >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        pick = torch.multinomial(sorted_probs, 1, generator=generator)  # (1,)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


# ---------------------------------------------------------------------------------------------
# The loop


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T) with T the longest prompt, padding on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _check_inputs(prompts, params) -> list[SamplingParams]:
    if isinstance(params, SamplingParams):
        params = [params] * len(prompts)
    if len(params) != len(prompts):
        raise DeltatuneError(f"generate: {len(prompts)} prompts but {len(params)} SamplingParams")
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise DeltatuneError(f"generate: prompt {i} is empty (at least one token is needed)")
    return list(params)


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    params: list[SamplingParams] | SamplingParams,
    on_token: OnToken | None = None,
) -> list[Completion]:
    """Complete every prompt (token ids) in one left-padded, KV-cached batch.

    `params` is one SamplingParams for all prompts or one per prompt. `on_token(i, delta)` is
    called with newly decoded text of prompt i as it is produced (never text that is later cut
    by a stop string). Returns one Completion per prompt, in the prompts' order. The model is
    put in eval mode for the call and restored afterwards."""
    if not prompts:
        return []
    params = _check_inputs(prompts, params)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = eos_token_ids(model, tokenizer)
    requests = [_Request(i, len(p), sp, device) for i, (p, sp) in enumerate(zip(prompts, params))]

    was_training = model.training
    model.eval()
    try:
        input_ids, mask = _left_pad(prompts, pad_id, device)  # (B, T), (B, T)
        # positions count real tokens only; padding gets 0 (masked anyway), as in HF generate
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        _decode_loop(model, tokenizer, requests, input_ids, mask, positions, eos_ids, on_token)
    finally:
        model.train(was_training)
    return [req.completion() for req in requests]


def _decode_loop(model, tokenizer, requests, input_ids, mask, positions, eos_ids, on_token) -> None:
    """Prefill, then one token per step until every request has finished."""
    active = list(requests)  # rows of the current batch, in order
    logits, cache = _prefill(model, input_ids, mask, positions)
    while active:
        next_tokens = _choose_tokens(logits, active)  # (B,) as a list
        for req, token in zip(active, next_tokens):
            req.add(token, tokenizer, eos_ids, on_token)

        keep = [row for row, req in enumerate(active) if req.finish_reason is None]
        if not keep:
            break
        last_pos = positions[:, -1:]  # (B, 1)
        step_ids = torch.tensor(next_tokens, dtype=torch.long, device=mask.device)[:, None]  # (B, 1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)  # (B, past + 1)
        if len(keep) < len(active):
            index = torch.tensor(keep, dtype=torch.long, device=mask.device)
            cache.batch_select_indices(index)
            step_ids, mask, last_pos = step_ids[index], mask[index], last_pos[index]
            active = [active[row] for row in keep]
        input_ids, positions = step_ids, last_pos + 1
        # input (B, 1); mask (B, past + 1); only the last position goes through the vocab head
        logits, cache = next_token_logits(model, input_ids, mask, positions, cache)  # (B, V)


def _prefill(model, input_ids, mask, positions):
    """(logits (B, V), KV cache) of the prompts. Rows with the same prompt (several sampled
    replies to one question, as the forgetting probe asks) are computed once and their cache
    rows copied: the prompt pass is most of the work of a short reply."""
    rows = [tuple(r) for r in input_ids.tolist()]
    first: dict[tuple, int] = {}
    source = [first.setdefault(row, len(first)) for row in rows]  # row -> its unique prompt
    if len(first) == len(rows):
        return next_token_logits(model, input_ids, mask, positions, None)
    unique = torch.tensor([rows.index(row) for row in first], dtype=torch.long, device=input_ids.device)
    logits, cache = next_token_logits(model, input_ids[unique], mask[unique], positions[unique], None)
    expand = torch.tensor(source, dtype=torch.long, device=input_ids.device)
    cache.batch_select_indices(expand)
    return logits[expand], cache
