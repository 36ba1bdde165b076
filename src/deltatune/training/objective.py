"""What a recipe trains for, as one object the training loop takes: the seam between stages.

    train(model, installed, train_set, val_set, cfg, run_dir, pad_id, objective=LM_OBJECTIVE)
    objective = Objective(loss_fn=pair_loss, units=pairs_in, collate=collate_pairs,
                          val_loss=mean_objective_loss)                      # e.g. DPO

The loop (deltatune.training.loop) is the same for every stage; what differs is

    loss_fn(model, batch) -> (mean loss over the batch's units, unit count)
    units(batch) -> int          what a micro-batch's mean is weighted by (labelled tokens for
                                 sft/pt, pairs for rm/dpo), so accumulation equals a big batch
    collate(examples, pad_id)    examples -> the batch loss_fn reads
    val_loss(model, dataset, objective, batch_size, pad_id, dtype) -> float
                                 the held-out number early stopping and best weights follow
    validate_start               also validate the starting weights (step 0)

A new stage brings its own functions; the loop, checkpoints, resume and validation stay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from deltatune.data.batching import collate
from deltatune.losses.lm import model_lm_loss
from deltatune.models.device import autocast_for, model_device
from deltatune.training.step import LossFn, labelled_tokens


def lm_val_loss(model, dataset, objective: "Objective", batch_size: int, pad_id: int, dtype: str = "float32") -> float:
    """Mean LM loss over every labelled token (the evaluator's number: deltatune.eval.perplexity)."""
    from deltatune.training.validator import validation_loss

    return validation_loss(model, dataset, batch_size, pad_id, dtype)


def mean_objective_loss(model, dataset, objective: "Objective", batch_size: int, pad_id: int,
                        dtype: str = "float32") -> float:
    """The objective's own loss over `dataset`, unit-weighted, in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, units = 0.0, 0
    try:
        with torch.no_grad(), autocast_for(dtype, device):
            for start in range(0, len(dataset), batch_size):
                batch = objective.collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))],
                                          pad_id)
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                loss, n = objective.loss_fn(model, batch)
                total += float(loss) * n
                units += n
    finally:
        model.train(was_training)
    return total / max(units, 1)


@dataclass(frozen=True)
class Objective:
    """A stage's loss, its unit, its batches and its validation number (see module docstring)."""

    loss_fn: LossFn = model_lm_loss
    units: Callable[[dict], int] = labelled_tokens
    collate: Callable[[list[dict], int], dict] = collate
    val_loss: Callable[..., float] = lm_val_loss
    # the starting weights are a candidate for the best weights: validated at step 0 of a fresh
    # run, so a start that is already fitted (rm's probe head) is kept when training only hurts
    validate_start: bool = False


LM_OBJECTIVE = Objective()  # sft and pt: next-token loss on labelled tokens
