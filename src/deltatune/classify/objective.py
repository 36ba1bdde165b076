"""The loss `recipe: cls` trains with, as the training loop's `Objective`.

    objective = cls_objective(head, pooling)
    loss, rows = objective.loss_fn(model, batch)     # mean cross-entropy over the batch's rows

Cross-entropy of the head's logits against the row's class id; the unit is a row, so gradient
accumulation weighs micro-batches by rows, and validation (early stopping, best weights) follows
the same loss over the held-out rows.
"""

from __future__ import annotations

import torch.nn.functional as F

from deltatune.classify.data import collate_labels, rows_in
from deltatune.classify.model import class_logits
from deltatune.training.objective import Objective, mean_objective_loss


def cls_objective(head, pooling: str) -> Objective:
    def loss_fn(model, batch):
        logits = class_logits(model, head, batch["input_ids"], batch["attention_mask"], pooling)  # (B, K)
        return F.cross_entropy(logits, batch["labels"].to(logits.device)), rows_in(batch)

    return Objective(loss_fn=loss_fn, units=rows_in, collate=collate_labels, val_loss=mean_objective_loss)
