"""Mean token loss and perplexity over the labelled tokens of a tokenised dataset.

    scores = loss_and_perplexity(model, tokenizer, build_sft_dataset(records, tok, data_cfg))
    scores["loss"], scores["perplexity"], scores["tokens"]

`loss` is the cross-entropy averaged over every labelled token of the whole split (token
weighted, not a mean of batch means), so it does not depend on the batch size;
`perplexity = exp(loss)`. Labels follow the HF convention: aligned with `input_ids`, -100 where
no loss is taken; position t's logits predict label t+1. Only positions whose next token
carries a label go through the vocabulary projection (`logits_to_keep`), which keeps memory
at batch x kept-positions x vocab instead of batch x length x vocab.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deltatune.errors import DeltatuneError

IGNORE = -100


def collate_right(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad examples ({"input_ids", "labels"} lists) into LongTensors of shape (B, T)."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex["input_ids"])
        ids[row, :n] = torch.tensor(ex["input_ids"], dtype=torch.long)
        labels[row, :n] = torch.tensor(ex["labels"], dtype=torch.long)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


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
    batches = [collate_right(ordered[i : i + batch_size], pad_id) for i in range(0, len(ordered), batch_size)]
    return batches, len(ordered)


@torch.inference_mode()
def loss_and_perplexity(
    model,
    tokenizer,
    dataset_or_batches: Iterable,
    batch_size: int = 8,
    desc: str = "loss",
) -> dict:
    """{"loss", "perplexity", "tokens"} over all labelled tokens (model kept in eval mode)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
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
    if total_tokens == 0:
        raise DeltatuneError(f"loss_and_perplexity: no labelled tokens in {n_examples} examples (every label is -100)")
    loss = total_loss / total_tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": total_tokens}


def _batch_loss(model, batch: dict[str, torch.Tensor]) -> tuple[float, int]:
    """(summed cross-entropy, labelled-token count) of one right-padded batch."""
    targets = batch["labels"][:, 1:]  # (B, T-1): position t predicts label t+1
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(-1)  # (K,) columns with any label
    if keep.numel() == 0:
        return 0.0, 0
    logits = model(
        input_ids=batch["input_ids"],  # (B, T)
        attention_mask=batch["attention_mask"],  # (B, T)
        logits_to_keep=keep,
    ).logits  # (B, K, V)
    kept_targets = targets[:, keep]  # (B, K)
    loss_sum = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), kept_targets.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return float(loss_sum), int((kept_targets != IGNORE).sum())
