"""The diagonal empirical Fisher of FISH Mask, and the global top-k mask it gives.

    fisher = estimate_fisher(model, wrappers, batches, num_samples, loss_fn)   # {name: (out, in)}
    indices = top_k_mask(list(fisher.values()), keep)                          # sorted flat positions

Sung, Nair & Raffel 2021 (arXiv:2111.09839), Sec. 3: the Fisher diagonal is estimated from N
examples with their ground-truth labels — the empirical Fisher — not with labels sampled from
the model (the "true" Fisher):

    F_i = (1/N) sum_{n=1..N} ( d log p(y_n | x_n) / d theta_i )^2

Each example gets its own backward pass (squaring a batch-mean gradient would square a sum,
not sum squares). For a causal LM, log p(y|x) is the sum of the log-probabilities of the
example's labelled tokens (the prompt and padding carry no label). The mask keeps the k
entries of largest F over all candidate tensors together (one global top-k, as the paper's
code does), so layers compete for the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from deltatune.models.device import model_device


def _examples(batches: Iterable[dict], limit: int):
    """One-row batches, at most `limit` of them, from batches of any size."""
    seen = 0
    for batch in batches:
        rows = int(batch["input_ids"].shape[0])
        for row in range(rows):
            if seen == limit:
                return
            yield {k: v[row:row + 1] for k, v in batch.items() if torch.is_tensor(v)}
            seen += 1


def estimate_fisher(
    model: nn.Module,
    wrappers: dict[str, nn.Module],
    batches: Iterable[dict],
    num_samples: int,
    loss_fn: Callable[[nn.Module, dict], tuple[torch.Tensor, int]],
) -> tuple[dict[str, torch.Tensor], int]:
    """({wrapper name: F (out, in) fp32}, examples used). The wrappers (`SparseDeltaLinear`)
    must be attached: each squares its weight gradient into its `fisher` buffer per backward.
    `loss_fn(model, batch) -> (mean loss over the batch's labelled tokens, their count)`, the
    recipes' LM loss; its mean times the count is -log p(y|x)."""
    device = model_device(model)
    was_training = model.training
    model.eval()  # no dropout noise in the estimate
    for w in wrappers.values():
        w.fisher = torch.zeros(w.base_layer.weight.shape, dtype=torch.float32, device=w.base_layer.weight.device)
    used = 0
    try:
        with torch.enable_grad():
            for example in _examples(batches, num_samples):
                example = {k: v.to(device) for k, v in example.items()}
                mean_nll, tokens = loss_fn(model, example)
                if tokens == 0:
                    continue  # nothing labelled: no log-likelihood to differentiate
                (mean_nll * tokens).backward()  # -log p(y|x): the sign vanishes when squared
                used += 1
        fisher = {name: w.fisher / max(used, 1) for name, w in wrappers.items()}
    finally:
        for w in wrappers.values():
            w.fisher = None
        model.train(was_training)
    return fisher, used


def top_k_mask(scores: list[torch.Tensor], keep: int) -> torch.Tensor:
    """Sorted positions (keep,) of the `keep` largest entries of the tensors' concatenation
    (each flattened, in list order)."""
    flat = torch.cat([s.detach().flatten().float().cpu() for s in scores])  # (n,)
    return torch.topk(flat, keep, sorted=False).indices.sort().values


def random_mask(total: int, keep: int, seed: int) -> torch.Tensor:
    """Sorted positions (keep,) drawn uniformly without replacement from [0, total)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:keep].sort().values
