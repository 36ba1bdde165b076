"""Check that an exported artefact computes what the in-memory adapted model computes.

    prompts, source = verification_prompts(cfg, tokenizer)       # from the run's own val data
    reference = fingerprint(adapted_model, prompts)              # before writing anything
    ... export, reload with bare transformers (or peft) ...
    result = compare(reference, fingerprint(reloaded, prompts), dtype=torch.float32)
    result.raise_if_failed("merged model in out/")                # DeltatuneError on mismatch

A fingerprint is, per prompt, the full logits over the prompt (T, V) and a greedy
continuation of a few tokens. The greedy loop here is deliberately plain — one full forward
per token, no KV cache, no `generate` — so the check does not depend on any decoding code
that could itself hide a difference. Tolerance: max |logit diff| <= atol + rtol * max |logit|
(fp32: 1e-4 + 1e-4 * scale: folding s·BA into W rounds differently from computing it beside
W, and on SmolLM2-135M with a strong all-linear LoRA that alone reaches ~3e-4 at logit scale
~30; real bugs — a missed module, a wrong scaling — show up as 1e-1 and more. Half precision
is looser), and the greedy token ids must be identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.generation import chat_prompt_ids

FALLBACK_MESSAGES = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "Who are you?",
]
TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (5e-2, 1e-2), torch.float16: (2e-2, 5e-3)}


@dataclass
class Fingerprint:
    logits: list[torch.Tensor]  # per prompt: (T, V) float32
    greedy: list[list[int]]  # per prompt: new token ids


@dataclass
class VerifyResult:
    prompts: int
    prompt_source: str
    max_abs_diff: float
    tolerance: float
    greedy_match: bool
    first_mismatch: str | None  # which prompt and step differed, for the error message

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.greedy_match

    def raise_if_failed(self, what: str) -> None:
        if self.ok:
            return
        problems = []
        if self.max_abs_diff > self.tolerance:
            problems.append(f"logits differ by up to {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g})")
        if not self.greedy_match:
            problems.append(f"greedy continuations differ ({self.first_mismatch})")
        raise DeltatuneError(
            f"verification failed for {what}: {'; '.join(problems)} on {self.prompts} prompts from "
            f"{self.prompt_source}. The export was removed. This is a bug or an unsupported model "
            f"layout: please report it with the run's config.yaml."
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def verification_prompts(cfg, tokenizer, count: int = 4, max_tokens: int = 96) -> tuple[list[list[int]], str]:
    """Prompt token ids from the run's val split (else test, else train), and where they came
    from. Data that cannot be read any more (moved files) falls back to fixed prompts."""
    from deltatune.data.formats import resolve_format, to_conversation
    from deltatune.data.sources import load_records

    for spec in (cfg.data.val, cfg.data.test, cfg.data.train):
        if not spec:
            continue
        try:
            records = load_records(spec)
            fmt = resolve_format(records, cfg.data.format)
            prompts = [_record_prompt(to_conversation(r, fmt), tokenizer, cfg, max_tokens) for r in records[:count]]
        except DeltatuneError:
            continue
        prompts = [p for p in prompts if p]
        if prompts:
            return prompts, spec
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": m}])[-max_tokens:] for m in FALLBACK_MESSAGES]
    return prompts[:count], "built-in fallback prompts (the run's data could not be read)"


def _record_prompt(conv, tokenizer, cfg, max_tokens: int) -> list[int]:
    """A record's prompt: the conversation up to (not including) the final answer."""
    if isinstance(conv, str):  # raw text (continued pre-training): its opening tokens
        return tokenizer(conv)["input_ids"][:max_tokens]
    messages = list(conv)
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if not messages:
        return []
    if cfg.data.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": cfg.data.system_prompt})
    return chat_prompt_ids(tokenizer, messages)[-max_tokens:]


def plain_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits (B, T, V) from a model's own `__call__` — how a third-party loader's model
    (bare transformers, `peft.PeftModel`) is run. peft's prompt-learning models return logits
    for their virtual tokens too: only the last T positions belong to the input."""
    return model(input_ids=ids).logits[:, -ids.shape[1]:].float()


@torch.inference_mode()
def fingerprint(model, prompts: list[list[int]], new_tokens: int = 12, run=all_logits) -> Fingerprint:
    """Logits over each prompt and its greedy continuation (plain loop, no cache).

    `run(model, ids) -> (1, T, V)`: deltatune's forward path by default (our own models, with
    their method active); `plain_logits` for a model loaded by another library."""
    model.eval()
    device = next(model.parameters()).device
    logits_out, greedy_out = [], []
    for prompt in prompts:
        ids = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
        logits = run(model, ids)[0]  # (T, V)
        logits_out.append(logits.cpu())
        new: list[int] = []
        step_logits = logits
        for _ in range(new_tokens):
            token = int(step_logits[-1].argmax())
            new.append(token)
            if len(new) == new_tokens:
                break
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)  # (1, T + k)
            step_logits = run(model, ids)[0]
        greedy_out.append(new)
    return Fingerprint(logits_out, greedy_out)


def compare(reference: Fingerprint, candidate: Fingerprint, dtype: torch.dtype, prompt_source: str) -> VerifyResult:
    atol, rtol = TOLERANCES.get(dtype, TOLERANCES[torch.float32])
    scale = max(float(ref.abs().max()) for ref in reference.logits)
    max_diff = max(float((ref - cand).abs().max()) for ref, cand in zip(reference.logits, candidate.logits))
    mismatch = None
    for i, (ref, cand) in enumerate(zip(reference.greedy, candidate.greedy)):
        if ref != cand:
            step = next((k for k, (a, b) in enumerate(zip(ref, cand)) if a != b), min(len(ref), len(cand)))
            mismatch = f"prompt {i}, token {step}: {ref[step:step + 3]} vs {cand[step:step + 3]}"
            break
    return VerifyResult(
        prompts=len(reference.logits),
        prompt_source=prompt_source,
        max_abs_diff=max_diff,
        tolerance=atol + rtol * scale,
        greedy_match=mismatch is None,
        first_mismatch=mismatch,
    )
