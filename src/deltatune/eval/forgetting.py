"""Forgetting as drift from the base: KL(base || tuned) on the base model's own replies.

    replies = heldout_replies(base_model, tokenizer, "builtin:general/prompts", system_prompt)
    ...train...
    drift = reply_kl(model, tokenizer, replies, cfg.data)   # the base = the same model, switched off
    drift["kl"], drift["nll_base"], drift["nll_tuned"], drift["nll_increase"], drift["tokens"]

Why: a greedy probe of a few questions moves by whole points when a near-tie flips. The KL,
averaged over every token of the base's own greedy replies, sees every shift of the next-token
distribution where the base was confident about what it says, so it is a far smoother measure
of how much the tuned model drifted from the base on general text. `nll_increase` says the
same in the units of a loss: how much less likely the tuned model finds the base's replies.

The base is the tuned model itself with its method switched off
(`deltatune.methods.core.switched_off`): no second copy of the weights. Both passes run per
batch through the one forward path (`deltatune.forward`), and only the labelled (reply)
positions go through the vocabulary projection (`deltatune.losses.lm.labelled_logits`),
full vocabulary, fp32. A bare model (no method installed) is its own base: KL 0. A method
that trained the base weights in place has no switched-off state, and `reply_kl` raises the
method's DeltatuneError saying so.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from deltatune.errors import DeltatuneError

KL_CHUNK = 512  # labelled tokens per KL reduction: bounds the (tokens, vocab) temporaries


def heldout_replies(model, tokenizer, spec: str, system_prompt: str | None,
                    max_new_tokens: int = 128, batch_size: int = 32) -> list[dict]:
    """`messages` records: the base model's greedy replies to the prompts of `spec` (cached,
    see `deltatune.replay.answers.self_replay_records`). `model` must compute the base: a bare
    model, or one whose method is switched off; the cache is keyed by the base weights only."""
    from deltatune.replay.answers import self_replay_records

    return self_replay_records(model, tokenizer, spec, system_prompt, max_new_tokens, batch_size,
                               config_key="data.forgetting_prompts")


def reply_kl(model, tokenizer, records: list[dict], data_cfg, batch_size: int = 8, desc: str = "reply kl") -> dict:
    """{"kl", "nll_base", "nll_tuned", "nll_increase", "tokens", "n"} over the reply tokens of
    `records` (`messages` records, tokenised as training tokenises them).

    kl: mean over reply tokens of sum_v p_base(v) (log p_base(v) - log p_tuned(v));
    nll_*: mean negative log-likelihood of the reply tokens; tokens: reply tokens scored;
    n: replies scored (after truncation drops). No gradients; the train/eval mode is restored."""
    from deltatune.data import build_sft_dataset, collate
    from deltatune.methods.core import installed_method
    from deltatune.models.device import model_device

    dataset = build_sft_dataset(records, tokenizer, data_cfg.model_copy(update={"format": "messages"}))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ordered = sorted(dataset.examples, key=lambda e: len(e["input_ids"]))  # less padding
    try:
        installed_method(model)
        has_method = True
    except DeltatuneError:  # a bare model is its own base
        has_method = False
    device = model_device(model)
    sums = {"kl": 0.0, "nll_base": 0.0, "nll_tuned": 0.0}
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(ordered), batch_size), desc=desc, unit="batch", leave=False):
                batch = {k: v.to(device) for k, v in collate(ordered[start : start + batch_size], pad_id).items()}
                scored = _batch_sums(model, batch, has_method)
                if scored is None:
                    continue
                for name, value in scored[0].items():
                    sums[name] += value
                tokens += scored[1]
    finally:
        model.train(was_training)
    if tokens == 0:
        raise DeltatuneError(f"reply_kl: no reply tokens in {len(ordered)} examples (every label is -100)")
    means = {name: total / tokens for name, total in sums.items()}
    return {**means, "nll_increase": means["nll_tuned"] - means["nll_base"], "tokens": tokens, "n": len(ordered)}


def _batch_sums(model, batch: dict[str, torch.Tensor], has_method: bool) -> tuple[dict, int] | None:
    """({"kl", "nll_base", "nll_tuned"} summed over the batch's reply tokens, their count), or
    None when the batch has none. The tuned pass runs as the model stands, the base pass
    with the method switched off (a bare model: the tuned pass stands for both)."""
    from deltatune.methods.core import switched_off

    log_q, targets = _reply_log_probs(model, batch, nullcontext())
    if log_q is None:
        return None
    log_p = _reply_log_probs(model, batch, switched_off(model))[0] if has_method else log_q
    kl = 0.0
    if has_method:
        for start in range(0, log_q.shape[0], KL_CHUNK):
            lp, lq = log_p[start : start + KL_CHUNK], log_q[start : start + KL_CHUNK]  # (n, V) views
            kl += float((lp.exp() * (lp - lq)).sum(dtype=torch.float64))
    nll = {name: -float(logs.gather(1, targets[:, None]).sum(dtype=torch.float64))
           for name, logs in (("nll_base", log_p), ("nll_tuned", log_q))}
    return {"kl": kl, **nll}, int(targets.shape[0])


def _reply_log_probs(model, batch: dict[str, torch.Tensor], mode) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(fp32 log-probs (N, V) at the N reply positions, their target ids (N,)) with the model
    in `mode` (a context manager: as it stands, or switched off)."""
    from deltatune.forward import decoder_hidden, output_head
    from deltatune.losses.lm import labelled_logits

    with mode:
        hidden, _ = decoder_hidden(model, batch["input_ids"], batch["attention_mask"])
        logits, keep = labelled_logits(hidden, output_head(model), batch["labels"])  # (N, V) fp32
    if logits is None:
        return None, batch["labels"].new_empty(0)
    return F.log_softmax(logits, dim=-1), batch["labels"][:, 1:][keep]
