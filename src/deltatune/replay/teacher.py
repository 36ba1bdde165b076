"""Teacher targets for replay examples: the base model's top-k next-token distribution.

    attach_teacher_topk(base_model, replay_set, k=16)   # before the method is applied
    batch = collate(examples, pad_id)                   # + teacher_ids / teacher_probs (B, T, K)

Replaying the base model's greedy answers (deltatune.replay.answers) only tells the tuned model
which token the base would pick. Its whole next-token distribution says more: how sure it was
and what the alternatives were (logit distillation; Hinton et al. 2015, and for LLM
fine-tuning e.g. the "KD against forgetting" line of work). With `data.replay_topk: K`, each
labelled position of a replay example carries the base model's K most likely next tokens with
their probabilities renormalised over those K, and the loss there is the cross-entropy
against that distribution, -sum_k p_k log q(token_k): equal, up to the teacher's constant
entropy, to KL(teacher_topK || student). Top-K instead of the full vocabulary keeps the
targets small (K x 8 bytes per token) and drops the long tail of near-zero probabilities.

Computed once per run with one batched forward pass over the replay examples (seconds), on
the base model before any method is applied; repeated copies share the same targets. The
vocabulary projection and the top-k run `chunk_positions` labelled positions at a time, so
no (positions x vocabulary) tensor exists for a whole batch (`topk_in_chunks`). Turning
the per-token lists into (B, T, K) tensors is the pipeline's job (`deltatune.data.batching.
collate_teacher`, called by `collate`).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from deltatune.data.batching import collate


TOPK_CHUNK_POSITIONS = 128  # labelled positions per vocabulary projection: 128 x V fp32 logits at a time
# Fewest rows one projection gets: BLAS picks other kernels for small matrices (on this CPU for
# fewer than 4 rows with one thread, 12 with two), whose rounding differs, and the targets must
# equal the whole-batch projection's bit for bit.
MIN_CHUNK_ROWS = 16


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[start, end) chunks of max(chunk, MIN_CHUNK_ROWS) rows covering n; a last chunk of fewer
    than MIN_CHUNK_ROWS rows joins the one before it."""
    chunk = max(chunk, MIN_CHUNK_ROWS)
    bounds = [(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_CHUNK_ROWS:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def topk_in_chunks(picked: torch.Tensor, head, k: int, chunk: int = TOPK_CHUNK_POSITIONS):
    """(top-k fp32 logits (N, K), their ids (N, K)) of `head(picked)` for (N, H) hidden states,
    projected `chunk` rows at a time: the same values and ids as `head(picked).float().topk(k)`."""
    values, ids = [], []
    for start, end in chunk_bounds(picked.shape[0], chunk):
        top = head(picked[start:end]).float().topk(k, dim=-1)  # (n, V) lives only for this chunk
        values.append(top.values)
        ids.append(top.indices)
    return torch.cat(values), torch.cat(ids)


@torch.no_grad()
def attach_teacher_topk(model, dataset, k: int, pad_id: int, batch_size: int = 8,
                        chunk_positions: int = TOPK_CHUNK_POSITIONS) -> None:
    """Add `teacher_ids` / `teacher_probs` to every example of `dataset`, in place.

    Both are lists with one entry per token (aligned with `labels`): None where the token is
    not a target, else K token ids / K probabilities for predicting that token."""
    from deltatune.forward import decoder_hidden, output_head
    from deltatune.losses.lm import labelled_hidden
    from deltatune.models.device import model_device

    was_training = model.training
    model.eval()
    device = model_device(model)
    examples = dataset.examples
    for start in tqdm(range(0, len(examples), batch_size), desc="replay teacher top-k", leave=False):
        chunk = examples[start : start + batch_size]
        batch = collate(chunk, pad_id)
        hidden, _ = decoder_hidden(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        picked, keep = labelled_hidden(hidden, batch["labels"])  # (N, H)
        for ex in chunk:
            ex["teacher_ids"] = [None] * len(ex["input_ids"])
            ex["teacher_probs"] = [None] * len(ex["input_ids"])
        if picked is None:
            continue
        top_logits, top_ids = topk_in_chunks(picked, output_head(model), k, chunk_positions)  # (N, K)
        probs = torch.softmax(top_logits, dim=-1).cpu()  # renormalised over the top K
        top_ids = top_ids.cpu()
        rows, cols = keep.cpu().nonzero(as_tuple=True)
        for n, (row, col) in enumerate(zip(rows.tolist(), cols.tolist())):
            chunk[row]["teacher_ids"][col + 1] = top_ids[n].tolist()
            chunk[row]["teacher_probs"][col + 1] = probs[n].tolist()
    model.train(was_training)

