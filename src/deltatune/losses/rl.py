"""The policy-gradient losses of the PPO and GRPO recipes, and the KL-coefficient controllers.
Pure tensor functions: the recipe computes log-probs and values, these turn them into losses.

    from deltatune.losses import rl

    loss, clip_frac = rl.ppo_policy_loss(logp, old_logp, advantages, mask, clip_eps=0.2)
    v_loss = rl.ppo_value_loss(values, old_values, returns, mask, clip_eps=0.2)
    loss, stats = rl.GRPO_LOSSES["token"](logp, old_logp, ref_logp, adv, mask, 0.2, 0.04)
    ctl = rl.AdaptiveKLController(0.1, target=6.0, horizon=10_000); ctl.update(kl, n_steps=64)

Per-token tensors are (B, T) with `mask` (B, T) marking the response tokens that count
(see rl_advantages.py, whose masked statistics, KL estimators, rewards and advantages are
re-exported here). logp / old_logp / ref_logp are the sampled tokens' log-probs under the
policy being trained, the policy that generated them, and the frozen reference.
"""

from __future__ import annotations

import torch

from deltatune.errors import DeltatuneError
from deltatune.losses.rl_advantages import (  # noqa: F401  (re-exported: one import for recipes)
    KL_ESTIMATORS,
    gae,
    group_advantages,
    kl_k1,
    kl_k3,
    kl_penalty,
    last_token_index,
    masked_mean,
    masked_whiten,
    shaped_rewards,
)


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's per-token clipped objective, as a loss (Schulman et al. 2017, eq. 7):

        rho_t = exp(logp_t - old_logp_t)
        l_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))

    Returns (l (B, T), clipped (B, T) bool). `clipped` marks where the clipped term is the
    strictly larger one, i.e. the token's gradient is zero: A > 0 and rho > 1 + eps, or A < 0
    and rho < 1 - eps. (A > 0 with rho < 1 - eps is outside the range but *not* clipped: the
    unclipped term wins and still pushes rho up.) advantages broadcast against logp.
    """
    ratio = torch.exp(logp - old_logp)  # (B, T)
    unclipped = -advantages * ratio
    clipped_term = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped_term)  # (B, T)
    with torch.no_grad():
        active = ((advantages > 0) & (ratio > 1.0 + clip_eps)) | ((advantages < 0) & (ratio < 1.0 - clip_eps))
    return per_token, active


def _fraction(flags: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of the masked tokens where `flags` (B, T) bool is set, as a Python float."""
    return float(masked_mean(flags.float(), mask.to(flags.device)))


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, float]:
    """PPO-clip policy loss (Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
    eq. 7), averaged over all masked tokens of the batch:

        L = mean_{t in mask} max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))

    Returns (loss scalar, clip_fraction): the share of masked tokens whose clipped term is
    active (see `clipped_surrogate`), i.e. whose gradient the clip switched off.
    """
    per_token, active = clipped_surrogate(logp, old_logp, advantages.detach(), clip_eps)
    return masked_mean(per_token, mask), _fraction(active, mask)


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> torch.Tensor:
    """Clipped value loss of PPO's reference implementation (OpenAI baselines PPO2; Ziegler et
    al. 2019 use it for RLHF), masked mean over tokens:

        V_clip = old_V + clip(V - old_V, -eps, eps)
        L_V    = 0.5 * mean_{t in mask} max((V - R)^2, (V_clip - R)^2)
    """
    v_clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)  # (B, T)
    per_token = torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(per_token, mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last axis: H = logsumexp(z) - sum_i p_i z_i,
    computed as -sum_i p_i log p_i with log p = log_softmax(z) = (z - max z) - logsumexp(z -
    max z): no overflow, and no cancellation between two large numbers. fp32 (fp64 stays).
    (..., V) -> (...). Logits of -inf (banned tokens) contribute 0, not NaN."""
    z = logits.float() if logits.dtype != torch.float64 else logits
    log_p = torch.log_softmax(z, dim=-1)  # (..., V)
    p = log_p.exp()
    return -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(dim=-1)


# ---------------------------------------------------------------- GRPO


def _grpo_terms(logp, old_logp, ref_logp, advantages, mask, clip_eps, kl_coef):
    """Per-token GRPO loss (N, T) = clipped surrogate + beta * k3 KL, and its stats dict."""
    adv = advantages.detach().to(logp)
    adv = adv[:, None] if adv.dim() == 1 else adv  # (N, 1): one advantage per sequence
    per_token, active = clipped_surrogate(logp, old_logp, adv, clip_eps)  # (N, T)
    if ref_logp is None:
        if kl_coef != 0:
            raise ValueError("grpo loss: kl_coef != 0 needs ref_logp (the reference log-probs)")
        kl_mean = 0.0
    else:
        kl = kl_k3(logp, ref_logp)  # (N, T)
        per_token = per_token + kl_coef * kl
        kl_mean = float(masked_mean(kl.detach(), mask))
    return per_token, {"clip_fraction": _fraction(active, mask), "kl": kl_mean}


def grpo_sequence_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's objective with its per-sequence normalisation (Shao et al. 2024, "DeepSeekMath",
    eq. 3), as a loss:

        L = 1/G sum_i 1/|o_i| sum_{t in o_i} [ max(-A_i rho_t, -A_i clip(rho_t, 1-eps, 1+eps))
                                               + beta * KL3_t ]

    Each sequence's tokens are averaged first, so a long answer's tokens weigh less each.
    advantages (N,) from `group_advantages`, broadcast along each sequence. Rows without a
    response token are left out of the mean over sequences. ref_logp may be None when
    kl_coef == 0. stats: clip_fraction and kl (mean k3), both per masked token.
    """
    per_token, stats = _grpo_terms(logp, old_logp, ref_logp, advantages, mask, clip_eps, kl_coef)
    per_sequence = masked_mean(per_token, mask, dim=1)  # (N,)
    has_tokens = mask.to(per_token.device).ne(0).any(dim=1)  # (N,)
    return masked_mean(per_sequence, has_tokens), stats


def grpo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO with DAPO's token-level normalisation (Yu et al. 2025, "DAPO", sec. 3.3):
    the same per-token terms as `grpo_sequence_loss`, summed over every response token of
    the batch and divided by their total count, so each token weighs the same however long
    its answer is:

        L = 1 / sum_i |o_i| * sum_i sum_{t in o_i} [ clipped surrogate_t + beta * KL3_t ]

    (DAPO itself drops the KL term: pass kl_coef=0 and ref_logp=None.) Same stats as above.
    """
    per_token, stats = _grpo_terms(logp, old_logp, ref_logp, advantages, mask, clip_eps, kl_coef)
    return masked_mean(per_token, mask), stats


GRPO_LOSSES = {"sequence": grpo_sequence_loss, "token": grpo_token_loss}


# ---------------------------------------------------------------- KL coefficient control


def _check_kind(state: dict, kind: str) -> None:
    if state.get("kind") != kind:
        raise DeltatuneError(
            f"the checkpoint's KL controller is {state.get('kind')!r} but the config asks for "
            f"{kind!r} (the KL settings changed since the run started): resume with the run's "
            "original config, or start a fresh run"
        )


class AdaptiveKLController:
    """Proportional control of the KL coefficient towards a target KL (Ziegler et al. 2019,
    "Fine-Tuning Language Models from Human Preferences"):

        e    = clip(KL_current / KL_target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n_steps / horizon)

    n_steps is how much training the measurement covers, in the units of horizon (the paper
    counts samples: the batch size per update).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController needs target > 0 and horizon > 0, "
                             f"got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        """Move the coefficient after a measured KL; returns the new value."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "adaptive", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        """Restore the adapted coefficient (target and horizon come from the config)."""
        _check_kind(state, "adaptive")
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient with AdaptiveKLController's interface (update is a no-op)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float | torch.Tensor, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, "fixed")
        self.value = float(state["value"])
