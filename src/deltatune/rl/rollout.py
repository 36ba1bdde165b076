"""One rollout batch: sample completions from the policy, then score every token once.

    rollout = sample_rollout(model, tokenizer, records, cfg, iteration)
    rollout.input_ids (N, T)  prompt + completion, right-padded; N = prompts x rl.num_samples
    rollout.mask (N, T-1)     True where position t predicts a completion token (t+1)
    score_rollout(model, rollout, reference, value_head=None)   # old / ref log-probs, values, entropy

Sampling is seeded per completion from (train.seed, iteration, row), so a resumed run draws the
very completions the uninterrupted run drew. Scoring runs in eval mode without gradients; the
update's forwards run in eval mode too (deltatune.rl.loop), so dropout never makes the first
epoch's ratio differ from 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deltatune.data.batching import collate
from deltatune.data.labels import IGNORE_INDEX
from deltatune.forward import decoder_hidden, output_head
from deltatune.generation import SamplingParams, chat_prompt_ids, generate
from deltatune.losses.lm import labelled_logits
from deltatune.losses.logps import token_logps
from deltatune.losses.rl import entropy_from_logits
from deltatune.models.device import model_device
from deltatune.rl.prompts import prompt_turns


@dataclass
class Rollout:
    records: list[dict]  # one per completion (each prompt's row repeated num_samples times)
    turns: list[list[dict]]
    texts: list[str]
    input_ids: torch.Tensor  # (N, T)
    attention_mask: torch.Tensor  # (N, T)
    labels: torch.Tensor  # (N, T): completion tokens, IGNORE_INDEX elsewhere
    lengths: list[int]  # completion tokens per row
    scores: torch.Tensor | None = None  # (N,) rewards
    tensors: dict = field(default_factory=dict)  # old_logp, ref_logp, values, advantages ... (N, T-1)

    @property
    def mask(self) -> torch.Tensor:
        return response_mask(self.labels)  # (N, T-1)


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """(N, T-1) True where position t predicts a completion token (labels[t+1] is one)."""
    return labels[:, 1:] != IGNORE_INDEX


def completion_seed(seed: int, iteration: int, row: int) -> int:
    return (seed * 1_000_003 + iteration * 10_007 + row) % 2**62


def sample_rollout(model, tokenizer, records: list[dict], cfg, iteration: int) -> Rollout:
    """`rl.num_samples` sampled completions of each record's prompt, as one right-padded batch."""
    rl = cfg.rl
    expanded = [r for r in records for _ in range(rl.num_samples)]
    turns = [prompt_turns(r, cfg.data.system_prompt) for r in expanded]
    prompts = [chat_prompt_ids(tokenizer, t) for t in turns]
    params = [SamplingParams(max_new_tokens=rl.max_new_tokens, temperature=rl.temperature, top_p=rl.top_p,
                             seed=completion_seed(cfg.train.seed, iteration, i)) for i in range(len(prompts))]
    done = generate(model, tokenizer, prompts, params)
    rows = [{"input_ids": p + c.token_ids, "labels": [IGNORE_INDEX] * len(p) + c.token_ids}
            for p, c in zip(prompts, done)]
    batch = collate(rows, tokenizer.pad_token_id)
    return Rollout(expanded, turns, [c.text for c in done], batch["input_ids"], batch["attention_mask"],
                   batch["labels"], [len(c.token_ids) for c in done])


def policy_token_logps(model, input_ids, attention_mask, labels, value_head=None):
    """(token log-probs (N, T-1), values (N, T-1) or None, hidden): one forward of the policy."""
    hidden, _ = decoder_hidden(model, input_ids, attention_mask)  # (N, T, H)
    logps, _ = token_logps(hidden, output_head(model), labels)
    values = value_head(hidden[:, :-1].float()).squeeze(-1) if value_head is not None else None  # V(s_t)
    return logps, values, hidden


@torch.no_grad()
def score_rollout(model, rollout: Rollout, reference, value_head=None, chunk: int = 8) -> None:
    """Fill rollout.tensors: old_logp, ref_logp (when a reference is given), values (PPO), and
    the mean per-token entropy of the policy over the completions."""
    device = model_device(model)
    was = model.training
    model.eval()
    parts: dict[str, list] = {"old_logp": [], "ref_logp": [], "values": []}
    entropy_sum, tokens = 0.0, 0
    try:
        for start in range(0, rollout.input_ids.shape[0], chunk):
            ids, mask, labels = (t[start:start + chunk].to(device)
                                 for t in (rollout.input_ids, rollout.attention_mask, rollout.labels))
            logps, values, hidden = policy_token_logps(model, ids, mask, labels, value_head)
            logits, keep = labelled_logits(hidden, output_head(model), labels)
            if logits is not None:
                entropy_sum += float(entropy_from_logits(logits).sum())
                tokens += int(keep.sum())
            parts["old_logp"].append(logps.cpu())
            if values is not None:
                parts["values"].append(values.cpu())
            if reference is not None:
                with reference.model() as ref:
                    ref_hidden, _ = decoder_hidden(ref, ids, mask)
                    parts["ref_logp"].append(token_logps(ref_hidden, output_head(ref), labels)[0].cpu())
    finally:
        model.train(was)
    rollout.tensors.update({k: torch.cat(v) for k, v in parts.items() if v})
    rollout.tensors["entropy"] = entropy_sum / max(tokens, 1)
