"""A judge that is a local model: one forward per question, verdict read from its logits.

    judge = LocalJudge.from_target("smollm2-135m")           # a model name or a run dir
    judge = LocalJudge(model, tokenizer, name="self")       # a model already loaded
    p = judge.prefer("Who founded Acme?", "Ann Lee.", "No idea.")   # P(first is better)
    ps = judge.prefer_many([(q, a, b), ...])                  # batched, same numbers
    s = judge.score("Who founded Acme?", "Ann Lee.")          # P(good by the rubric)

How: the judge prompt (`judges.compare_messages`) is rendered with the chat template and the
assistant cue, and one forward gives the next-token logits. Of those only the verdict tokens
count: P(A) = softmax over [logit(A), logit(B)], where logit(A) is the logsumexp of the logits
of every first token that spells the verdict ("A" and " A" tokenise differently; tokens shared
by both verdicts, such as a lone space, are dropped). So the judge never has to *generate* A
or B, which a small model often does not do cleanly. `prefer` asks twice, A first and B first,
and averages P(A better) over the two orders (`judges.swap_average`), so
prefer(a, b) == 1 - prefer(b, a) up to float rounding. `score` asks Yes/No once.

Prompts are batched left-padded (sorted by length to waste little padding) and run through
`deltatune.forward.decoder_hidden`: whatever adapter the model carries is the judge.
"""

from __future__ import annotations

import torch

from deltatune.errors import DeltatuneError
from deltatune.forward import decoder_hidden, output_head
from deltatune.generation import chat_prompt_ids
from deltatune.rlaif.judges import (
    DEFAULT_RUBRIC,
    GRADE_TOKENS,
    PREFER_TOKENS,
    Pair,
    Triple,
    compare_messages,
    grade_messages,
    swap_average,
)


def verdict_token_ids(tokenizer, verdicts: tuple[str, str]) -> tuple[list[int], list[int]]:
    """The first-token ids spelling each verdict, as it starts a reply ("A") or follows a space
    (" A"); ids both verdicts share are removed, since they would not tell them apart."""
    found = []
    for verdict in verdicts:
        ids = []
        for text in (verdict, " " + verdict):
            tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
            if tokens and tokens[0] not in ids:
                ids.append(tokens[0])
        found.append(ids)
    first, second = found
    shared = set(first) & set(second)
    first, second = [i for i in first if i not in shared], [i for i in second if i not in shared]
    if not first or not second:
        raise DeltatuneError(
            f"the judge's tokenizer cannot tell the verdicts {verdicts} apart by their first token; "
            f"use another judge model"
        )
    return first, second


class LocalJudge:
    """A judge over a loaded causal LM (see the module docstring)."""

    def __init__(self, model, tokenizer, rubric: str = DEFAULT_RUBRIC, name: str = "local",
                 batch_size: int = 8):
        if batch_size < 1:
            raise DeltatuneError(f"judge batch size must be >= 1 (got {batch_size})")
        self.model, self.tokenizer = model, tokenizer
        self.rubric, self.name, self.batch_size = rubric, name, batch_size
        self.prefer_ids = verdict_token_ids(tokenizer, PREFER_TOKENS)
        self.grade_ids = verdict_token_ids(tokenizer, GRADE_TOKENS)

    @classmethod
    def from_target(cls, target: str, rubric: str = DEFAULT_RUBRIC, device: str | None = None,
                    batch_size: int = 8) -> "LocalJudge":
        """Load a model name or run dir (`load_target`) as the judge, named after `target`."""
        from deltatune.models.runs import load_target

        loaded = load_target(target, device=device)
        return cls(loaded.model, loaded.tokenizer, rubric, name=target, batch_size=batch_size)

    def prefer(self, prompt: str, response_a: str, response_b: str) -> float:
        return self.prefer_many([(prompt, response_a, response_b)])[0]

    def prefer_many(self, triples: list[Triple]) -> list[float]:
        """P(A better) per (prompt, A, B): both orders of every triple in one batched pass."""
        first = [compare_messages(self.rubric, q, a, b) for q, a, b in triples]
        swapped = [compare_messages(self.rubric, q, b, a) for q, a, b in triples]
        p_first = self.first_verdict_probs(first + swapped, self.prefer_ids)  # (2N,) P("A")
        n = len(triples)
        return swap_average(p_first[:n], p_first[n:])

    def score(self, prompt: str, response: str) -> float:
        return self.score_many([(prompt, response)])[0]

    def score_many(self, pairs: list[Pair]) -> list[float]:
        """P("Yes": the response is good by the rubric) per (prompt, response)."""
        return self.first_verdict_probs([grade_messages(self.rubric, q, r) for q, r in pairs], self.grade_ids)

    def first_verdict_probs(self, conversations: list[list[dict]], ids: tuple[list[int], list[int]]) -> list[float]:
        """P(first verdict) = softmax over the two verdicts' logits, per conversation."""
        prompts = [chat_prompt_ids(self.tokenizer, conv) for conv in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
        out = [0.0] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            logits = self._last_logits([prompts[i] for i in rows])  # (B, V)
            for row, p in zip(rows, _two_way_first(logits, ids).tolist()):
                out[row] = p
        return out

    @torch.inference_mode()
    def _last_logits(self, prompts: list[list[int]]) -> torch.Tensor:
        """fp32 next-token logits (B, V) after each prompt, from one left-padded forward."""
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        # positions count real tokens only, so a padded row sees what it would see alone
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        was_training = self.model.training
        self.model.eval()
        try:
            hidden, _ = decoder_hidden(self.model, ids.to(device), mask.to(device), positions.to(device))
        finally:
            self.model.train(was_training)
        return output_head(self.model)(hidden[:, -1, :]).float()  # (B, V)


def _two_way_first(logits: torch.Tensor, ids: tuple[list[int], list[int]]) -> torch.Tensor:
    """(B,) P(first verdict) from logits (B, V): each verdict's logit is the logsumexp over the
    tokens that spell it, then a two-way softmax."""
    first = logits[:, ids[0]].logsumexp(-1)  # (B,)
    second = logits[:, ids[1]].logsumexp(-1)  # (B,)
    return torch.sigmoid(first - second)  # softmax([f, s])[0] == sigmoid(f - s)
