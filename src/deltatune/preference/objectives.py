"""The loss the training loop optimises in `recipe: rm` and `recipe: dpo`, as `Objective`s.

    objective = rm_objective(head, cfg.preference)            # Bradley-Terry on head scores
    objective = dpo_objective(cfg.preference, reference)      # the preference.loss row's loss

Both count pairs as their unit (accumulation weights micro-batches by pairs) and validate on
their own loss over the held-out pairs (early stopping, best weights).
"""

from __future__ import annotations

from deltatune.data.preference import collate_pairs, pairs_in
from deltatune.losses.preference import PREFERENCE_LOSSES
from deltatune.losses.reward import bradley_terry_loss
from deltatune.preference.forward import pair_scores, policy_and_reference
from deltatune.training.objective import Objective, mean_objective_loss


def rm_objective(head, pref_cfg) -> Objective:
    def loss_fn(model, batch):
        chosen, rejected = pair_scores(model, head, batch, pref_cfg.reward_pooling)
        return bradley_terry_loss(chosen, rejected, center_coef=pref_cfg.reward_center_coef).mean(), len(chosen)

    return Objective(loss_fn=loss_fn, units=pairs_in, collate=collate_pairs, val_loss=mean_objective_loss,
                     validate_start=pref_cfg.head_init == "probe")


def dpo_objective(pref_cfg, reference) -> Objective:
    """`reference` None for the reference-free losses (and when log-probs are precomputed)."""
    spec = PREFERENCE_LOSSES[pref_cfg.loss]

    def loss_fn(model, batch):
        terms = spec.fn(policy_and_reference(model, batch, reference if spec.needs_reference else None), pref_cfg)
        return terms.losses.mean(), len(terms.losses)

    return Objective(loss_fn=loss_fn, units=pairs_in, collate=collate_pairs, val_loss=mean_objective_loss)
