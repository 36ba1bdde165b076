"""Pairwise reward-model loss (Bradley-Terry) and its metrics.

    losses = bradley_terry_loss(chosen_scores, rejected_scores)  # (B,), the caller averages
    acc = pairwise_accuracy(chosen_scores, rejected_scores)      # share ranked right
    gap = mean_margin(chosen_scores, rejected_scores)            # mean s_c - s_r

Scores are the reward model's scalar outputs (B,) for the chosen and the rejected answer of
each pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Negative log-likelihood of the observed preference under the Bradley-Terry model
    (Bradley & Terry 1952), P(chosen > rejected) = sigmoid(s_c - s_r), as used for the RLHF
    reward model of Ouyang et al. 2022 (InstructGPT), per pair (B,) in fp32:

        loss = -log sigmoid(s_c - s_r - margin) + center_coef (s_c + s_r)^2

    margin: optional (B,) or scalar required gap, e.g. from preference strength (Llama 2,
    Touvron et al. 2023). center_coef > 0 adds the reward-centring regulariser of Eisenstein
    et al. 2023 ("Helping or Herding?"), which pins the otherwise arbitrary offset of the scores
    near zero; off by default."""
    s_c, s_r = chosen_scores.float(), rejected_scores.float()  # (B,), (B,)
    gap = s_c - s_r
    if margin is not None:
        gap = gap - torch.as_tensor(margin, dtype=gap.dtype, device=gap.device)
    losses = -F.logsigmoid(gap)
    if center_coef:
        losses = losses + center_coef * (s_c + s_r) ** 2
    return losses


def pairwise_accuracy(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Share of pairs scored chosen strictly above rejected (ties count wrong)."""
    return (chosen_scores > rejected_scores).float().mean().item()


def mean_margin(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> float:
    """Mean of s_c - s_r over the pairs."""
    return (chosen_scores.float() - rejected_scores.float()).mean().item()
