"""What the RL recipes compute *before* a loss: masked statistics, per-token KL estimates,
KL-shaped rewards, GAE (PPO) and group-relative advantages (GRPO).

    from deltatune.losses.rl import gae, shaped_rewards, group_advantages  # re-exported there

    with torch.no_grad():
        rewards = shaped_rewards(scores, logp, ref_logp, mask, kl_coef)    # (B, T)
        advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=0.95)
        advantages = masked_whiten(advantages, mask)
    adv = group_advantages(rewards_per_completion, group_size=8)       # GRPO, (N,)

Every per-token tensor is (B, T), aligned with `mask` (B, T): 1 / True marks a generated
response token that counts, 0 a prompt or padding position. The response is one contiguous
span per row (prompt zeros before it, right padding after); rows may differ in length.
Masked-out positions may hold garbage (padding log-probs, values): it is selected away with
`torch.where`, never multiplied in, so even inf/NaN there does not reach a value; outputs
there are 0. (Keep it finite where a gradient flows: autograd multiplies 0 by it.)
"""

from __future__ import annotations

from typing import Callable

import torch

WHITEN_EPS = 1e-8
GROUP_STD_EPS = 1e-4  # TRL's GRPO choice: a near-constant group is not blown up to +-1 by 1e-8


def _as_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """mask (B, T) bool/int/float -> float weights in `like`'s dtype and device."""
    return mask.to(device=like.device, dtype=like.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * m) / sum(m) over the masked entries (all of them, or along `dim`).

    A slice with no masked entry averages to 0 (not NaN). Entries where m == 0 never enter
    the sum, even when they are inf or NaN.
    """
    m = _as_weights(mask, x)
    picked = torch.where(m != 0, x * m, torch.zeros_like(x))
    if dim is None:
        total, count = picked.sum(), m.sum()
    else:
        total, count = picked.sum(dim), m.sum(dim)
    return total / count.clamp(min=torch.finfo(count.dtype).tiny)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mu) / sqrt(sigma^2 + 1e-8) with mu, sigma^2 the mean and *population* variance
    over the masked entries, so the result has exactly zero mean and unit variance there.

    PPO normalises advantages this way per batch (as in OpenAI baselines' PPO2 and the
    InstructGPT / Ziegler et al. 2019 implementations). shift_mean=False adds mu back: only
    the scale changes (used for rewards, whose sign carries meaning). Masked-out entries -> 0.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(_as_weights(mask, x) != 0, whitened, torch.zeros_like(whitened))


# ---------------------------------------------------------------- per-token KL estimators
# Schulman (2020), "Approximating KL divergence" (joschu.net/blog/kl-approx.html): tokens are
# sampled from the policy q, and with log r = log p_ref - log q each estimator's expectation
# under q is KL(q || p_ref).


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log q - log p_ref = -log r: unbiased, high variance, negative for some tokens.
    The per-token penalty of Ziegler et al. 2019 and InstructGPT. (B, T) -> (B, T)."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = r - log r - 1 = exp(ref - logp) - (ref - logp) - 1, r = p_ref / q: unbiased,
    low variance and >= 0 for every token (x - 1 >= log x). GRPO's KL term (Shao et al.
    2024, eq. 4). (B, T) -> (B, T)."""
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio  # expm1: exact near r = 1, where k3 ~ (log r)^2 / 2


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": kl_k1,
    "k3": kl_k3,
}


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """The per-token KL estimate (B, T) named `kind` in KL_ESTIMATORS."""
    try:
        estimator = KL_ESTIMATORS[kind]
    except KeyError:
        raise ValueError(f"unknown KL estimator {kind!r}; known: {sorted(KL_ESTIMATORS)}") from None
    return estimator(logp, ref_logp)


# ---------------------------------------------------------------- rewards and advantages


def last_token_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index (B,) of each row's last masked position, has_any (B,) bool). A row with no
    masked position gets index 0 and has_any False."""
    keep = mask != 0  # (B, T)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(keep)  # (B, T)
    last = torch.where(keep, positions, torch.zeros_like(positions)).amax(dim=1)  # (B,)
    return last, keep.any(dim=1)


def shaped_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kind: str = "k1",
) -> torch.Tensor:
    """Per-token RLHF reward (B, T): r_t = -beta * KL_t on every response token, plus the
    sequence's score on its last response token:

        r_t = -beta * KL_t(logp_t, ref_logp_t) + [t == last_b] * score_b

    Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"; Ouyang et al.
    2022 (InstructGPT), eq. 2. scores (B,) from the reward model; logp / ref_logp (B, T) are
    the sampled tokens' log-probs under the policy and the reference. Call under
    torch.no_grad(): the result is a constant target. A row with no response token gets no
    score (all zeros). Positions outside the mask are 0.
    """
    kl = kl_penalty(logp, ref_logp, kind)  # (B, T)
    m = _as_weights(mask, kl)
    rewards = torch.where(m != 0, -kl_coef * kl * m, torch.zeros_like(kl))  # (B, T)
    last, has_any = last_token_index(mask)  # (B,), (B,)
    bonus = torch.where(has_any, scores.to(rewards), torch.zeros_like(scores, dtype=rewards.dtype))
    return rewards.scatter_add(1, last[:, None], bonus[:, None])


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous
    Control Using Generalized Advantage Estimation"), backwards over time:

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                      (the value-function target)

    The episode ends at each row's last response token: V and A after it are 0. rewards and
    values (B, T); returns (advantages (B, T), returns (B, T)), both 0 outside the mask and
    detached (they are targets; a gradient through them would be a bug).
    """
    rewards, values = rewards.detach(), values.detach()
    keep = mask.to(rewards.device) != 0  # (B, T)
    zeros_col = torch.zeros_like(rewards[:, 0])  # (B,)
    values = torch.where(keep, values, torch.zeros_like(values))  # padding values may be garbage
    rewards = torch.where(keep, rewards, torch.zeros_like(rewards))
    advantages = torch.zeros_like(rewards)  # (B, T)
    next_value, next_adv = zeros_col, zeros_col  # (B,): beyond the sequence, nothing
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        adv_t = torch.where(keep[:, t], delta + gamma * lam * next_adv, zeros_col)  # (B,)
        advantages[:, t] = adv_t
        # a masked-out t (prompt or padding) is outside the episode: what follows it is 0
        next_value, next_adv = values[:, t], adv_t
    returns = torch.where(keep, advantages + values, torch.zeros_like(values))
    return advantages, returns


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: bool = True,
    eps: float = GROUP_STD_EPS,
) -> torch.Tensor:
    """GRPO's group-relative advantage (Shao et al. 2024, "DeepSeekMath", sec. 4.1.2), one
    number per completion:

        A_i = (r_i - mean(r_group)) / (std(r_group) + eps)     scale=True   (GRPO)
        A_i =  r_i - mean(r_group)                             scale=False  (Dr. GRPO,
                                                               Liu et al. 2025, drops the std)

    rewards (N,) hold N / group_size consecutive groups, each the completions of one prompt.
    std is the *population* std (unbiased=False): the paper normalises by "the standard
    deviation of the group's rewards" without a Bessel correction, and the population std
    keeps a group's advantages at unit scale (sum A_i^2 = G) whatever G is. A group whose
    rewards are all equal carries no signal and gets exact zeros (no NaN, no float dust
    divided by eps). Returns (N,) float, detached.
    """
    n = rewards.shape[0]
    if rewards.dim() != 1 or group_size < 1 or n % group_size != 0:
        raise ValueError(
            f"group_advantages needs rewards of shape (N,) with N a multiple of group_size; "
            f"got shape {tuple(rewards.shape)} and group_size {group_size}"
        )
    grouped = rewards.detach().float().view(n // group_size, group_size)  # (N/G, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # (N/G, G)
    if scale:
        centred = centred / (grouped.std(dim=1, unbiased=False, keepdim=True) + eps)
    constant = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # (N/G, 1)
    return torch.where(constant, torch.zeros_like(centred), centred).view(n)
