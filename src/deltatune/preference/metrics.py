"""Held-out numbers of preference runs, and the reference log-probs computed once.

    rm_metrics(model, head, pairs, batch_size, pad_id, cfg.preference)
        -> {"pairwise_accuracy", "mean_margin", "loss", "n"}
    dpo_metrics(model, pairs, pref_cfg, reference, batch_size, pad_id)
        -> {"reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward", "loss",
            "logp_accuracy", "n"}
    precompute_reference(pairs, reference, batch_size, pad_id)   # ref_chosen / ref_rejected on each pair

`reward_accuracy` is the share of pairs whose implicit reward (beta x log-ratio to the
reference, or the loss's own reward for SimPO / ORPO) ranks chosen above rejected, a tie
counting half: before training the policy is the reference, every pair ties and the accuracy
is exactly 0.5. `logp_accuracy` needs no reference: the share of pairs the model itself gives
the higher (length-normalised) log-probability to the chosen answer — the base model's
number is the control a run is compared with.
"""

from __future__ import annotations

import torch

from deltatune.data.preference import collate_pairs
from deltatune.losses.preference import PREFERENCE_LOSSES
from deltatune.losses.reward import bradley_terry_loss
from deltatune.models.device import model_device
from deltatune.preference.forward import halves, pair_logps, pair_scores, policy_and_reference


def _batches(pairs, batch_size: int, pad_id: int, device):
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs([pairs[i] for i in range(start, min(start + batch_size, len(pairs)))], pad_id)
        yield {k: v.to(device) for k, v in batch.items()}


def _ranked(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs ranked right, ties counting half."""
    return float(((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean())


def _eval_mode(model):
    was = model.training
    model.eval()
    return was


def rm_metrics(model, head, pairs, batch_size: int, pad_id: int, pref_cfg) -> dict:
    was = _eval_mode(model)
    chosen, rejected = [], []
    try:
        with torch.no_grad():
            for batch in _batches(pairs, batch_size, pad_id, model_device(model)):
                c, r = pair_scores(model, head, batch, pref_cfg.reward_pooling)
                chosen.append(c.float().cpu())
                rejected.append(r.float().cpu())
    finally:
        model.train(was)
    c, r = torch.cat(chosen), torch.cat(rejected)
    return {"pairwise_accuracy": _ranked(c, r), "mean_margin": float((c - r).mean()),
            "loss": float(bradley_terry_loss(c, r, center_coef=pref_cfg.reward_center_coef).mean()),
            "mean_reward_chosen": float(c.mean()), "mean_reward_rejected": float(r.mean()), "n": len(c)}


def dpo_metrics(model, pairs, pref_cfg, reference, batch_size: int, pad_id: int) -> dict:
    spec = PREFERENCE_LOSSES[pref_cfg.loss]
    was = _eval_mode(model)
    parts = {"chosen": [], "rejected": [], "loss": [], "avg_c": [], "avg_r": []}
    try:
        with torch.no_grad():
            for batch in _batches(pairs, batch_size, pad_id, model_device(model)):
                pair = policy_and_reference(model, batch, reference if spec.needs_reference else None)
                terms = spec.fn(pair, pref_cfg)
                parts["chosen"].append(terms.chosen_rewards.float().cpu())
                parts["rejected"].append(terms.rejected_rewards.float().cpu())
                parts["loss"].append(terms.losses.float().cpu())
                parts["avg_c"].append((pair.policy_chosen / pair.chosen_tokens.clamp(min=1)).float().cpu())
                parts["avg_r"].append((pair.policy_rejected / pair.rejected_tokens.clamp(min=1)).float().cpu())
    finally:
        model.train(was)
    c, r, loss, avg_c, avg_r = (torch.cat(parts[k]) for k in ("chosen", "rejected", "loss", "avg_c", "avg_r"))
    return {"reward_accuracy": _ranked(c, r), "reward_margin": float((c - r).mean()),
            "chosen_reward": float(c.mean()), "rejected_reward": float(r.mean()), "loss": float(loss.mean()),
            "logp_accuracy": _ranked(avg_c, avg_r), "n": len(c)}


def precompute_reference(pairs, reference, batch_size: int, pad_id: int) -> None:
    """Put the reference's summed answer log-probs on every pair (`ref_chosen`, `ref_rejected`):
    one pass before training, then no reference forward per step and no model copy."""
    for start in range(0, len(pairs), batch_size):
        rows = [pairs[i] for i in range(start, min(start + batch_size, len(pairs)))]
        batch = {k: v.to(model_device(reference.policy)) for k, v in collate_pairs(rows, pad_id).items()}
        with reference.model() as ref:
            logps, _ = pair_logps(ref, batch)
        chosen, rejected = halves(logps.float().cpu())
        for row, c, r in zip(rows, chosen.tolist(), rejected.tolist()):
            row["ref_chosen"], row["ref_rejected"] = c, r
