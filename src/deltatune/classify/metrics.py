"""Held-out numbers of a classifier: accuracy, macro-F1, the majority-class rate.

    scores = predict_split(model, head, dataset, pooling, batch_size, pad_id)   # (N, K) probabilities
    classification_metrics(gold, predicted, names, majority, losses)
        -> {"accuracy", "macro_f1", "majority_rate", "majority_label", "loss", "n", "per_label", "confusion"}
    summary_line("test", after, before)   # 'test: accuracy 94.3% (base 9.4%), macro-F1 ..., majority-class rate ...'

`majority_rate` is the accuracy of always answering the commonest *training* label: the bar a
classifier must clear to have learnt anything from the text. `macro_f1` is the unweighted mean
of the per-label F1 = 2PR / (P + R) over the labels that occur in the split or in its
predictions (a label with no true and no predicted row has no F1 and is not averaged; a label
predicted but never right, or never predicted, scores 0), so a rare label weighs as much as a
common one. `confusion[i][j]` counts rows of true label i predicted as j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deltatune.classify.data import collate_labels
from deltatune.classify.model import class_logits
from deltatune.models.device import model_device


@torch.no_grad()
def predict_split(model, head, dataset, pooling: str, batch_size: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((N, K) class probabilities, (N,) gold ids) over `dataset`, in eval mode (restored after)."""
    was = model.training
    model.eval()
    device = model_device(model)
    probs, gold = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collate_labels([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], pad_id)
            logits = class_logits(model, head, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                  pooling)
            probs.append(F.softmax(logits.float(), dim=-1).cpu())
            gold.append(batch["labels"])
    finally:
        model.train(was)
    return torch.cat(probs), torch.cat(gold)


def classification_metrics(gold: list[int], predicted: list[int], names: list[str], majority: int,
                           losses: list[float] | None = None) -> dict:
    """The split's numbers (see the module docstring); `losses`: each row's cross-entropy."""
    n, k = len(gold), len(names)
    confusion = [[0] * k for _ in range(k)]
    for g, p in zip(gold, predicted):
        confusion[g][p] += 1
    per_label, f1s = {}, []
    for i, name in enumerate(names):
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted_i = sum(row[i] for row in confusion)
        if support == 0 and predicted_i == 0:
            continue
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        f1s.append(f1)
    out = {
        "accuracy": sum(g == p for g, p in zip(gold, predicted)) / max(n, 1),
        "macro_f1": sum(f1s) / max(len(f1s), 1),
        "majority_rate": sum(g == majority for g in gold) / max(n, 1),
        "majority_label": names[majority],
        "n": n,
        "per_label": per_label,
        "confusion": confusion,
    }
    if losses is not None:
        out["loss"] = sum(losses) / max(len(losses), 1)
    return out


def evaluate_split(model, head, dataset, names: list[str], majority: int, pooling: str, batch_size: int,
                   pad_id: int) -> dict:
    """`classification_metrics` of the model on one tokenised split."""
    probs, gold = predict_split(model, head, dataset, pooling, batch_size, pad_id)
    losses = (-probs.clamp(min=1e-12).log().gather(1, gold[:, None]).squeeze(1)).tolist()
    return classification_metrics(gold.tolist(), probs.argmax(dim=-1).tolist(), list(names), majority, losses)


def summary_line(split: str, metrics: dict, before: dict | None = None) -> str:
    """One line a person reads: accuracy and macro-F1 (with the base's beside them when
    measured) and the majority-class rate to compare them with."""
    def pct(key: str) -> str:
        base = f" (base {100 * before[key]:.1f}%)" if before and key in before else ""
        return f"{100 * metrics[key]:.1f}%{base}"

    return (f"{split}: accuracy {pct('accuracy')}, macro-F1 {pct('macro_f1')}, majority-class rate "
            f"{100 * metrics['majority_rate']:.1f}% ('{metrics['majority_label']}'), n={metrics['n']}")
