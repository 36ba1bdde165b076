"""Teacher targets for replay examples: the base model's top-k next-token distribution.

    attach_teacher_topk(base_model, replay_set, k=16)   # before the method is applied
    batch = collate(examples, pad_id)                   # + teacher_ids / teacher_probs (B, T, K)

Replaying the base model's greedy answers (deltatune.data.replay) only tells the tuned model
which token the base would pick. Its whole next-token distribution says more: how sure it was
and what the alternatives were (logit distillation; Hinton et al. 2015, and for LLM
fine-tuning e.g. the "KD against forgetting" line of work). With `data.replay_topk: K`, each
labelled position of a replay example carries the base model's K most likely next tokens with
their probabilities renormalised over those K, and the loss there is the cross-entropy
against that distribution, -sum_k p_k log q(token_k): equal, up to the teacher's constant
entropy, to KL(teacher_topK || student). Top-K instead of the full vocabulary keeps the
targets small (K x 8 bytes per token) and drops the long tail of near-zero probabilities.

Computed once per run with one batched forward pass over the replay examples (seconds), on
the base model before any method is applied; repeated copies share the same targets.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from deltatune.data.batching import collate


@torch.no_grad()
def attach_teacher_topk(model, dataset, k: int, pad_id: int, batch_size: int = 8) -> None:
    """Add `teacher_ids` / `teacher_probs` to every example of `dataset`, in place.

    Both are lists with one entry per token (aligned with `labels`): None where the token is
    not a target, else K token ids / K probabilities for predicting that token."""
    from deltatune.losses.lm import labelled_logits
    from deltatune.models.device import model_device

    was_training = model.training
    model.eval()
    device = model_device(model)
    examples = dataset.examples
    for start in tqdm(range(0, len(examples), batch_size), desc="replay teacher top-k", leave=False):
        chunk = examples[start : start + batch_size]
        batch = collate(chunk, pad_id)
        hidden = model.get_decoder()(input_ids=batch["input_ids"].to(device),
                                     attention_mask=batch["attention_mask"].to(device)).last_hidden_state
        logits, keep = labelled_logits(hidden, model.get_output_embeddings(), batch["labels"])  # (N, V)
        for ex in chunk:
            ex["teacher_ids"] = [None] * len(ex["input_ids"])
            ex["teacher_probs"] = [None] * len(ex["input_ids"])
        if logits is None:
            continue
        top_logits, top_ids = logits.topk(k, dim=-1)  # (N, K)
        probs = torch.softmax(top_logits, dim=-1).cpu()  # renormalised over the top K
        top_ids = top_ids.cpu()
        rows, cols = keep.cpu().nonzero(as_tuple=True)
        for n, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):
            chunk[row]["teacher_ids"][col + 1] = top_ids[n].tolist()
            chunk[row]["teacher_probs"][col + 1] = probs[n].tolist()
    model.train(was_training)


def collate_teacher(examples: list[dict], width: int) -> dict[str, torch.Tensor]:
    """(B, T, K) `teacher_ids` and `teacher_probs` (all-zero probs where a token has no teacher
    target: the loss uses the plain label there); {} when no example carries targets."""
    k = next((len(ids) for ex in examples for ids in ex.get("teacher_ids") or [] if ids), 0)
    if k == 0:
        return {}
    ids = torch.zeros((len(examples), width, k), dtype=torch.long)
    probs = torch.zeros((len(examples), width, k), dtype=torch.float32)
    for row, ex in enumerate(examples):
        cols = [col for col, tid in enumerate(ex.get("teacher_ids") or []) if tid is not None]
        if cols:  # one tensor per example, not one per token (this runs for every batch)
            ids[row, cols] = torch.tensor([ex["teacher_ids"][c] for c in cols])
            probs[row, cols] = torch.tensor([ex["teacher_probs"][c] for c in cols])
    return {"teacher_ids": ids, "teacher_probs": probs}
