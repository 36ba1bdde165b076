"""Preference-optimisation losses over (chosen, rejected) answer pairs, one function per loss.

    terms = dpo_sigmoid_loss(pc, pr, rc, rr, beta=0.1)         # any of the five functions
    loss = terms.losses.mean()
    acc, margin = reward_accuracy(terms), reward_margin(terms)

    spec = PREFERENCE_LOSSES[cfg.loss]                          # how a recipe dispatches
    terms = spec.fn(PairLogps(pc_sum, pr_sum, n_c, n_r, rc_sum, rr_sum), cfg)

Inputs are per-pair (B,) log-probabilities of the answer tokens (losses/logps.sequence_logps):
pc / pr under the policy, rc / rr under the frozen reference. Every function returns a
`PreferenceTerms`: the per-pair losses (B,) and the implicit rewards (B,), detached, that the
accuracy / margin metrics read. `PREFERENCE_LOSSES` says per name whether the loss needs a
reference model, length-averaged log-probs and the chosen answer's NLL, and holds an adapter
with one signature `fn(PairLogps, cfg) -> PreferenceTerms` (cfg: beta, label_smoothing,
simpo_gamma, orpo_lambda), so the recipe does a dict lookup, not an if-chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from deltatune.errors import DeltatuneError


@dataclass(frozen=True)
class PreferenceTerms:
    """losses: (B,) per pair, to be averaged by the caller; chosen_rewards / rejected_rewards:
    (B,) implicit rewards, detached (metrics only)."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def _terms(losses: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> PreferenceTerms:
    return PreferenceTerms(losses, chosen_rewards.detach(), rejected_rewards.detach())


def _margin_of_log_ratios(pc, pr, rc, rr) -> torch.Tensor:
    """h = (pc - rc) - (pr - rr): how much more the policy raised chosen than rejected. (B,)"""
    return (pc - rc) - (pr - rr)


def dpo_sigmoid_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> PreferenceTerms:
    """DPO (Rafailov et al. 2023, "Direct Preference Optimization"), per pair:

        h = (pc - rc) - (pr - rr)
        loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)

    eps = label_smoothing > 0 is conservative DPO (Mitchell 2023): the preference labels are
    assumed flipped with probability eps, so the loss is minimal at the finite margin
    beta h = log((1 - eps) / eps) instead of pushing h to infinity. eps = 0 is plain DPO.
    Rewards: beta (pc - rc), beta (pr - rr)."""
    h = _margin_of_log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)  # (B,)
    losses = (-(1.0 - label_smoothing) * F.logsigmoid(beta * h)
              - label_smoothing * F.logsigmoid(-beta * h))
    return _terms(losses, beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected))


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> PreferenceTerms:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences"), with their tau = beta, per pair:

        loss = (h - 1 / (2 beta))^2,   h = (pc - rc) - (pr - rr)

    A squared loss regresses the margin to 1/(2 beta) instead of growing it without bound.
    The log-probs may be summed or length-averaged per answer; that is the caller's choice. The
    recipe passes length-averaged ones (mean per-token log-prob), as TRL does following the IPO
    authors' practice, which keeps the target margin meaningful across answer lengths.
    Rewards: beta (pc - rc), beta (pr - rr) on whatever scale the inputs are."""
    h = _margin_of_log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)  # (B,)
    losses = (h - 1.0 / (2.0 * beta)) ** 2
    return _terms(losses, beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected))


def hinge_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> PreferenceTerms:
    """Hinge / SLiC-HF calibration loss (Zhao et al. 2023, "SLiC-HF: Sequence Likelihood
    Calibration with Human Feedback"), on the reference-relative margin, per pair:

        loss = relu(1 - beta h),   h = (pc - rc) - (pr - rr)

    Zero (and no gradient) once beta h >= 1. Rewards: beta (pc - rc), beta (pr - rr)."""
    h = _margin_of_log_ratios(policy_chosen, policy_rejected, ref_chosen, ref_rejected)  # (B,)
    losses = torch.relu(1.0 - beta * h)
    return _terms(losses, beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected))


def simpo_loss(
    policy_chosen_avg: torch.Tensor,
    policy_rejected_avg: torch.Tensor,
    beta: float,
    gamma: float,
) -> PreferenceTerms:
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free
    Reward"), reference-free; inputs are length-normalised (mean per-token) log-probs (B,):

        loss = -log sigmoid(beta (avg_c - avg_r) - gamma)

    gamma is the target reward margin itself (not gamma / beta). The paper's defaults are far
    larger than DPO's: beta ~ 2 - 2.5 with gamma / beta ~ 0.5 (so gamma ~ 1 - 1.25).
    Rewards: beta avg_c, beta avg_r (the paper's length-normalised implicit reward)."""
    losses = -F.logsigmoid(beta * (policy_chosen_avg - policy_rejected_avg) - gamma)  # (B,)
    return _terms(losses, beta * policy_chosen_avg, beta * policy_rejected_avg)


def _log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for log-probs x < 0, stably: 1 - exp(x) cancels catastrophically near
    x = 0, -expm1(x) does not. x is clamped to <= -1e-6 because an average log-prob of exactly
    0 (probability 1) would give log(0) = -inf."""
    return torch.log(-torch.expm1(x.clamp(max=-1e-6)))


def orpo_loss(
    policy_chosen_avg: torch.Tensor,
    policy_rejected_avg: torch.Tensor,
    chosen_nll: torch.Tensor,
    lam: float,
) -> PreferenceTerms:
    """ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference
    Model"): SFT on the chosen answer plus an odds-ratio term, reference-free. With the
    length-averaged log-probs avg (B,) as log P, odds(P) = P / (1 - P):

        log_odds = (avg_c - avg_r) - (log(1 - e^avg_c) - log(1 - e^avg_r))
        loss = chosen_nll - lam log sigmoid(log_odds)

    chosen_nll: (B,) mean per-token NLL of the chosen answer (= -avg_c when it is computed on
    the same tokens). Rewards: lam avg_c, lam avg_r (the length-averaged log-probs scaled like
    the odds-ratio term; only their difference is used, by the metrics)."""
    log_odds = ((policy_chosen_avg - policy_rejected_avg)
                - (_log1m_exp(policy_chosen_avg) - _log1m_exp(policy_rejected_avg)))  # (B,)
    losses = chosen_nll - lam * F.logsigmoid(log_odds)
    return _terms(losses, lam * policy_chosen_avg, lam * policy_rejected_avg)


# ---------------------------------------------------------------------------------------------
# The recipe's dispatch table


@dataclass(frozen=True)
class PairLogps:
    """What a preference step computed for B pairs. policy_* / ref_*: summed answer log-probs
    (B,) fp32 (ref_* None when no reference model ran); *_tokens: answer token counts (B,)."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None


def _average(summed: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean per-token log-prob (B,). An answer with no labelled token averages to 0 instead of
    NaN (its sum is 0 too); such pairs are a data problem the data layer should drop."""
    return summed / tokens.clamp(min=1).to(summed.dtype)


def _reference(pair: PairLogps, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if pair.ref_chosen is None or pair.ref_rejected is None:
        raise DeltatuneError(
            f"preference.loss: {name!r} compares against a reference model, but no reference "
            "log-probs were computed; use a reference-free loss ('simpo', 'orpo') or let the "
            "recipe run the reference forward")
    return pair.ref_chosen, pair.ref_rejected


def _sigmoid(pair: PairLogps, cfg: Any) -> PreferenceTerms:
    rc, rr = _reference(pair, "sigmoid")
    return dpo_sigmoid_loss(pair.policy_chosen, pair.policy_rejected, rc, rr, cfg.beta, cfg.label_smoothing)


def _ipo(pair: PairLogps, cfg: Any) -> PreferenceTerms:
    rc, rr = _reference(pair, "ipo")
    return ipo_loss(_average(pair.policy_chosen, pair.chosen_tokens),
                    _average(pair.policy_rejected, pair.rejected_tokens),
                    _average(rc, pair.chosen_tokens), _average(rr, pair.rejected_tokens), cfg.beta)


def _hinge(pair: PairLogps, cfg: Any) -> PreferenceTerms:
    rc, rr = _reference(pair, "hinge")
    return hinge_loss(pair.policy_chosen, pair.policy_rejected, rc, rr, cfg.beta)


def _simpo(pair: PairLogps, cfg: Any) -> PreferenceTerms:
    return simpo_loss(_average(pair.policy_chosen, pair.chosen_tokens),
                      _average(pair.policy_rejected, pair.rejected_tokens), cfg.beta, cfg.simpo_gamma)


def _orpo(pair: PairLogps, cfg: Any) -> PreferenceTerms:
    avg_c = _average(pair.policy_chosen, pair.chosen_tokens)  # (B,)
    return orpo_loss(avg_c, _average(pair.policy_rejected, pair.rejected_tokens), -avg_c, cfg.orpo_lambda)


@dataclass(frozen=True)
class LossSpec:
    """One row of PREFERENCE_LOSSES. needs_reference: the recipe must run the frozen reference
    forward; length_normalised: the loss reads mean per-token log-probs (the adapter divides);
    needs_chosen_nll: the loss includes an SFT term on the chosen answer."""

    fn: Callable[[PairLogps, Any], PreferenceTerms]
    needs_reference: bool
    length_normalised: bool
    needs_chosen_nll: bool


PREFERENCE_LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(_sigmoid, needs_reference=True, length_normalised=False, needs_chosen_nll=False),
    "ipo": LossSpec(_ipo, needs_reference=True, length_normalised=True, needs_chosen_nll=False),
    "hinge": LossSpec(_hinge, needs_reference=True, length_normalised=False, needs_chosen_nll=False),
    "simpo": LossSpec(_simpo, needs_reference=False, length_normalised=True, needs_chosen_nll=False),
    "orpo": LossSpec(_orpo, needs_reference=False, length_normalised=True, needs_chosen_nll=True),
}


def reward_accuracy(terms: PreferenceTerms) -> float:
    """Share of pairs whose chosen reward is strictly above the rejected one (ties count wrong)."""
    return (terms.chosen_rewards > terms.rejected_rewards).float().mean().item()


def reward_margin(terms: PreferenceTerms) -> float:
    """Mean of chosen reward - rejected reward over the pairs."""
    return (terms.chosen_rewards - terms.rejected_rewards).float().mean().item()
