"""Mean token loss and perplexity over the labelled tokens of a tokenised dataset.

    scores = loss_and_perplexity(model, tokenizer, build_sft_dataset(records, tok, data_cfg))
    scores["loss"], scores["perplexity"], scores["tokens"]

`loss` is the cross-entropy averaged over every labelled token of the whole split (token
weighted, not a mean of batch means), so it does not depend on the batch size;
`perplexity = exp(loss)`. Labels follow the HF convention: aligned with `input_ids`, -100 where
no loss is taken; position t's logits predict label t+1. Only positions whose next token
carries a label go through the vocabulary projection (`deltatune.losses.lm`).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from tqdm.auto import tqdm

from deltatune.data import collate
from deltatune.errors import DeltatuneError
from deltatune.losses.lm import model_lm_loss


def _batches(dataset_or_batches, pad_id: int, batch_size: int) -> tuple[list, int]:
    """A tokenised dataset (`.examples`) becomes length-sorted right-padded batches; an
    iterable of ready batch dicts passes through. Returns (batches, number of examples)."""
    examples = getattr(dataset_or_batches, "examples", None)
    if examples is None and isinstance(dataset_or_batches, list) and dataset_or_batches:
        if isinstance(dataset_or_batches[0].get("input_ids"), list):
            examples = dataset_or_batches  # a plain list of example dicts
    if examples is None:
        batches = list(dataset_or_batches)
        return batches, sum(int(b["input_ids"].shape[0]) for b in batches)
    # similar lengths together: less padding, same result (the loss is token-weighted)
    ordered = sorted(examples, key=lambda e: len(e["input_ids"]))
    batches = [collate(ordered[i : i + batch_size], pad_id) for i in range(0, len(ordered), batch_size)]
    return batches, len(ordered)


def loss_and_perplexity(
    model,
    tokenizer,
    dataset_or_batches: Iterable,
    batch_size: int = 8,
    desc: str = "loss",
) -> dict:
    """{"loss", "perplexity", "tokens"} over all labelled tokens (model kept in eval mode)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss, tokens = mean_token_loss(model, dataset_or_batches, pad_id, batch_size, desc)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": tokens}


@torch.inference_mode()
def mean_token_loss(model, dataset_or_batches: Iterable, pad_id: int, batch_size: int = 8,
                    desc: str = "loss") -> tuple[float, int]:
    """(cross-entropy averaged over every labelled token, token count); also the training
    loop's validation loss. Runs in eval mode (no dropout) and restores the previous mode."""
    total_loss, total_tokens, n_examples = token_loss_sum(model, dataset_or_batches, pad_id, batch_size, desc)
    if total_tokens == 0:
        raise DeltatuneError(f"loss_and_perplexity: no labelled tokens in {n_examples} examples (every label is -100)")
    return total_loss / total_tokens, total_tokens


def token_loss_sum(model, dataset_or_batches: Iterable, pad_id: int, batch_size: int = 8,
                   desc: str = "loss") -> tuple[float, int, int]:
    """(summed cross-entropy over every labelled token, token count, example count): the parts
    `mean_token_loss` divides, kept apart so several processes can add theirs before dividing.
    Eval mode (no dropout); the previous mode is restored."""
    batches, n_examples = _batches(dataset_or_batches, pad_id, batch_size)
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
            loss_sum, tokens = _batch_loss(model, {k: v.to(device) for k, v in batch.items()})
            total_loss += loss_sum
            total_tokens += tokens
    finally:
        model.train(was_training)
    return total_loss, total_tokens, n_examples


def _batch_loss(model, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """(summed cross-entropy, labelled-token count) of one right-padded batch."""
    mean_loss, tokens = model_lm_loss(model, batch)  # head runs on labelled positions only
    return float(mean_loss) * tokens, tokens
