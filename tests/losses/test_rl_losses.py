"""RL math of the PPO / GRPO recipes (deltatune.losses.rl) against hand computations.

Every expected number is worked out in the test from the paper's equation, not by calling
the function under test another way. Masked-out positions hold finite garbage on purpose.
"""

from __future__ import annotations

import math

import pytest
import torch

from deltatune.errors import DeltatuneError
from deltatune.losses import rl

LN2 = math.log(2.0)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- masked statistics


def test_masked_mean_ignores_padding_and_empty_rows_give_zero():
    x = _t([[1.0, 2.0, 3.0, 100.0], [5.0, 7.0, -50.0, float("inf")]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert rl.masked_mean(x, mask).item() == pytest.approx(2.0)
    torch.testing.assert_close(rl.masked_mean(x, mask, dim=1), _t([2.0, 0.0]))


def test_masked_whiten_population_variance():
    x = _t([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, population variance ((-1)^2 + 0 + 1^2) / 3 = 2/3
    scale = 1.0 / math.sqrt(2.0 / 3.0 + 1e-8)
    torch.testing.assert_close(rl.masked_whiten(x, mask), _t([[-scale, 0.0, scale, 0.0]]))
    torch.testing.assert_close(rl.masked_whiten(x, mask, shift_mean=False),
                               _t([[2.0 - scale, 2.0, 2.0 + scale, 0.0]]))


# ---------------------------------------------------------------- KL estimators


def test_k1_k3_hand_values():
    logp = _t([[-1.0, -2.0, -0.7]])
    ref = _t([[-2.0, -1.0, -0.7]])
    # k1 = logp - ref
    torch.testing.assert_close(rl.kl_k1(logp, ref), _t([[1.0, -1.0, 0.0]]))
    # k3 = exp(ref - logp) - (ref - logp) - 1: log r = -1 -> e^-1 + 1 - 1; log r = 1 -> e - 2
    torch.testing.assert_close(rl.kl_k3(logp, ref), _t([[math.exp(-1.0), math.e - 2.0, 0.0]]))
    torch.testing.assert_close(rl.kl_penalty(logp, ref, "k3"), rl.kl_k3(logp, ref))
    assert rl.KL_ESTIMATORS == {"k1": rl.kl_k1, "k3": rl.kl_k3}


def test_k3_is_nonnegative():
    g = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(4, 50, generator=g) * 3, torch.randn(4, 50, generator=g) * 3
    assert (rl.kl_k3(logp, ref) >= 0).all()
    assert (rl.kl_k1(logp, ref) < 0).any()  # k1 is not: why GRPO uses k3 as a loss term


def test_unknown_kl_estimator_lists_known_names():
    with pytest.raises(ValueError, match=r"'k2'.*\['k1', 'k3'\]"):
        rl.kl_penalty(_t([[0.0]]), _t([[0.0]]), "k2")


# ---------------------------------------------------------------- shaped rewards


def test_shaped_rewards_score_on_last_real_token_of_each_row():
    # row 0: prompt at t=0, response t=1..3; row 1: prompt t=0, response t=1..2, padding t=3
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    logp = _t([[-1.0, -1.0, -2.0, -0.5], [-1.0, -3.0, -1.0, 9.0]])
    ref = _t([[-5.0, -1.5, -1.0, -1.0], [-2.0, -2.0, -2.0, -2.0]])
    scores = _t([2.0, -1.0])
    # k1 = logp - ref: row 0 [4, 0.5, -1, 0.5], row 1 [1, -1, 1, 11]; r_t = -0.1 * k1 on the mask
    expected = _t([[0.0, -0.05, 0.1, -0.05 + 2.0],
                   [0.0, 0.1, -0.1 - 1.0, 0.0]])
    torch.testing.assert_close(rl.shaped_rewards(scores, logp, ref, mask, kl_coef=0.1), expected)


def test_shaped_rewards_k3_and_empty_row():
    mask = torch.tensor([[1, 1], [0, 0]])
    logp, ref = _t([[-2.0, -1.0], [0.0, 0.0]]), _t([[-1.0, -1.0], [0.0, 0.0]])
    # k3 of log r = 1 is e - 2; the empty row gets neither penalty nor score
    expected = _t([[-0.5 * (math.e - 2.0), 3.0], [0.0, 0.0]])
    out = rl.shaped_rewards(_t([3.0, 7.0]), logp, ref, mask, kl_coef=0.5, kind="k3")
    torch.testing.assert_close(out, expected)


# ---------------------------------------------------------------- GAE


def test_gae_hand_worked_three_steps_with_padded_and_prompt_rows():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = _t([[0.0, 0.0, 1.0], [0.2, 1.0, 99.0], [7.0, 0.0, 1.0]])
    values = _t([[0.5, 0.4, 0.6], [0.3, 0.7, 55.0], [9.0, 0.4, 0.6]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 1]])
    # row 0 (V after t=2 is 0):
    #   t=2: delta = 1 + 0.9*0 - 0.6 = 0.4             A2 = 0.4
    #   t=1: delta = 0 + 0.9*0.6 - 0.4 = 0.14          A1 = 0.14 + 0.72*0.4 = 0.428
    #   t=0: delta = 0 + 0.9*0.4 - 0.5 = -0.14         A0 = -0.14 + 0.72*0.428 = 0.16816
    # row 1 (padded at t=2: the episode ends at t=1):
    #   t=1: delta = 1.0 + 0.9*0 - 0.7 = 0.3           A1 = 0.3
    #   t=0: delta = 0.2 + 0.9*0.7 - 0.3 = 0.53        A0 = 0.53 + 0.72*0.3 = 0.746
    # row 2 (prompt at t=0): t=1, t=2 as row 0's, t=0 -> 0
    adv_expected = _t([[0.16816, 0.428, 0.4], [0.746, 0.3, 0.0], [0.0, 0.428, 0.4]])
    ret_expected = _t([[0.66816, 0.828, 1.0], [1.046, 1.0, 0.0], [0.0, 0.828, 1.0]])  # A + V
    adv, ret = rl.gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, adv_expected)
    torch.testing.assert_close(ret, ret_expected)


def test_gae_gamma_lam_one_is_return_to_go_minus_value():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(3, 6, generator=g, dtype=torch.float64)
    values = torch.randn(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = [6, 4, 1]
    mask = torch.zeros(3, 6, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    adv, ret = rl.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert not adv.requires_grad and not ret.requires_grad  # targets, detached
    for b, n in enumerate(lengths):
        for t in range(6):
            to_go = float(rewards[b, t:n].sum()) if t < n else 0.0
            expected_adv = to_go - values[b, t].item() if t < n else 0.0
            assert adv[b, t].item() == pytest.approx(expected_adv)
            assert ret[b, t].item() == pytest.approx(to_go)


# ---------------------------------------------------------------- PPO


def _ppo_cases():
    # eps = 0.2, old_logp = 0 so ratio = exp(logp). Per case: (A, ratio) -> token loss, clipped?
    #   A=+1, rho=1.1 inside          : max(-1.1, -1.1) = -1.1   no
    #   A=+1, rho=1.5 above           : max(-1.5, -1.2) = -1.2   yes (clipped term wins)
    #   A=+1, rho=0.5 below           : max(-0.5, -0.8) = -0.5   no (unclipped wins, grad flows)
    #   A=-1, rho=0.5 below           : max( 0.5,  0.8) =  0.8   yes
    #   A=-1, rho=1.5 above           : max( 1.5,  1.2) =  1.5   no
    #   A=-1, rho=0.9 inside          : max( 0.9,  0.9) =  0.9   no
    #   padding (mask 0)              : ignored
    adv = _t([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 5.0]])
    ratio = _t([[1.1, 1.5, 0.5, 0.5, 1.5, 0.9, 3.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    return adv, ratio, mask


def test_ppo_policy_loss_clip_cases_value_fraction_and_gradient():
    adv, ratio, mask = _ppo_cases()
    logp = ratio.log().requires_grad_(True)
    old_logp = torch.zeros_like(logp)
    loss, clip_frac = rl.ppo_policy_loss(logp, old_logp, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.1 - 1.2 - 0.5 + 0.8 + 1.5 + 0.9) / 6)
    assert isinstance(clip_frac, float) and clip_frac == pytest.approx(2 / 6)
    loss.backward()
    # d/dlogp (-A * rho) = -A * rho where unclipped; 0 where the clip is active; 0 on padding
    expected = _t([[-1.1, 0.0, -0.5, 0.0, 1.5, 0.9, 0.0]]) / 6
    torch.testing.assert_close(logp.grad, expected)


def test_ppo_value_loss_clip():
    # eps = 0.2; V_clip = old + clip(V - old, -0.2, 0.2)
    values = _t([[1.0, 0.6, 0.0, 2.0, 9.0]]).requires_grad_(True)
    old = _t([[0.5, 0.5, 0.5, 0.5, 0.0]])
    returns = _t([[1.0, 2.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    #   V=1.0 old=0.5 R=1: V_clip=0.7; max(0, 0.09) = 0.09      (clipped term active)
    #   V=0.6 old=0.5 R=2: V_clip=0.6; max(1.96, 1.96) = 1.96   (inside)
    #   V=0.0 old=0.5 R=0: V_clip=0.3; max(0, 0.09) = 0.09      (clipped term active)
    #   V=2.0 old=0.5 R=0: V_clip=0.7; max(4, 0.49) = 4         (unclipped active)
    loss = rl.ppo_value_loss(values, old, returns, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.09 + 1.96 + 0.09 + 4.0) / 4)
    loss.backward()
    # d/dV 0.5 * (V - R)^2 / 4 = (V - R) / 4 where unclipped; 0 where the clipped term is active
    torch.testing.assert_close(values.grad, _t([[0.0, (0.6 - 2.0) / 4, 0.0, 2.0 / 4, 0.0]]))


def test_entropy_from_logits():
    v = 7
    torch.testing.assert_close(rl.entropy_from_logits(torch.zeros(2, 3, v)), torch.full((2, 3), math.log(v)))
    # shift-invariant and stable at large logits
    torch.testing.assert_close(rl.entropy_from_logits(torch.full((1, v), 1e4)), torch.tensor([math.log(v)]))
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2
    logits = torch.tensor([[math.log(0.5), math.log(0.25), math.log(0.25)]], dtype=torch.float64)
    assert rl.entropy_from_logits(logits).item() == pytest.approx(1.5 * LN2)
    # banned tokens (-inf) contribute nothing: two live tokens -> ln 2
    banned = torch.tensor([[0.0, 0.0, -float("inf"), -float("inf")]])
    assert rl.entropy_from_logits(banned).item() == pytest.approx(LN2, rel=1e-6)


# ---------------------------------------------------------------- GRPO


def test_group_advantages_scaled_and_dr_grpo():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    # group 1: mean 0.5, population std sqrt(4 * 0.25 / 4) = 0.5 -> +-0.5 / (0.5 + 1e-4)
    a = 0.5 / (0.5 + 1e-4)
    torch.testing.assert_close(rl.group_advantages(rewards, 4),
                               torch.tensor([a, -a, -a, a, 0.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(rl.group_advantages(rewards, 4, eps=0.0),
                               torch.tensor([1.0, -1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(rl.group_advantages(rewards, 4, scale=False),
                               torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]))


def test_group_advantages_constant_group_is_exactly_zero():
    # 0.1 is not exact in binary: the mean differs from the entries by float dust, which
    # divided by a tiny std would be O(1) noise. A constant group must give exact zeros.
    out = rl.group_advantages(torch.tensor([0.1, 0.1, 0.1, 0.3, 0.3, 0.3]), 3)
    assert torch.equal(out, torch.zeros(6))
    with pytest.raises(ValueError, match="multiple of group_size"):
        rl.group_advantages(torch.zeros(5), 4)


def _grpo_batch():
    # two sequences: row 0 has 3 response tokens, row 1 has 1 (then padding with garbage)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    logp = _t([[-1.0, -2.0, -1.0], [-1.0, 4.0, 4.0]])
    old_logp = logp.clone()  # ratio 1 everywhere: surrogate = -A, nothing clipped
    # log r = ref - logp: row 0 [0, 0, ln 2] -> k3 [0, 0, 1 - ln 2]; row 1 [-ln 2] -> ln 2 - 1/2
    ref_logp = _t([[-1.0, -2.0, -1.0 + LN2], [-1.0 - LN2, 0.0, 0.0]])
    advantages = _t([1.0, -2.0])
    return logp, old_logp, ref_logp, advantages, mask


def test_grpo_token_vs_sequence_normalisation_on_unequal_lengths():
    logp, old, ref, adv, mask = _grpo_batch()
    beta = 0.1
    # per-token terms -A + beta * k3:
    #   row 0: [-1, -1, -1 + beta (1 - ln 2)]      row 1: [2 + beta (ln 2 - 1/2)]
    seq_expected = ((-1.0 + beta * (1 - LN2) / 3) + (2.0 + beta * (LN2 - 0.5))) / 2
    # token: sum over the 4 tokens / 4 = (-3 + 2 + beta (1 - ln 2 + ln 2 - 1/2)) / 4
    tok_expected = (-1.0 + beta * 0.5) / 4
    seq_loss, seq_stats = rl.grpo_sequence_loss(logp, old, ref, adv, mask, 0.2, beta)
    tok_loss, tok_stats = rl.grpo_token_loss(logp, old, ref, adv, mask, 0.2, beta)
    assert seq_loss.item() == pytest.approx(seq_expected)
    assert tok_loss.item() == pytest.approx(tok_expected)
    # stats: mean k3 per token (0 + 0 + (1 - ln 2) + (ln 2 - 1/2)) / 4 = 1/8; nothing clipped
    for stats in (seq_stats, tok_stats):
        assert stats["kl"] == pytest.approx(0.125)
        assert stats["clip_fraction"] == 0.0
    assert rl.GRPO_LOSSES == {"sequence": rl.grpo_sequence_loss, "token": rl.grpo_token_loss}


def test_grpo_token_loss_gradient_and_clip():
    logp, old, ref, adv, mask = _grpo_batch()
    logp = logp.clone().requires_grad_(True)
    beta = 0.1
    loss, _ = rl.grpo_token_loss(logp, old, ref, adv, mask, 0.2, beta)
    loss.backward()
    # d/dlogp [-A rho + beta (exp(ref - logp) - (ref - logp) - 1)] at rho = 1
    #   = -A + beta (1 - exp(ref - logp)); exp(ref - logp) = r: row 0 [1, 1, 2], row 1 [1/2]
    expected = _t([[-1.0, -1.0, -1.0 + beta * (1 - 2)], [2.0 + beta * (1 - 0.5), 0.0, 0.0]]) / 4
    torch.testing.assert_close(logp.grad, expected)
    # ratio 1.5 on row 0 with A = +1 is clipped (3 of the 4 tokens)
    _, stats = rl.grpo_token_loss(old + _t([[math.log(1.5)] * 3, [0.0] * 3]), old, None, adv, mask, 0.2, 0.0)
    assert stats == {"clip_fraction": pytest.approx(0.75), "kl": 0.0}
    with pytest.raises(ValueError, match="ref_logp"):
        rl.grpo_sequence_loss(logp, old, None, adv, mask, 0.2, 0.04)


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_moves_towards_target_clipped_at_20_percent():
    def fresh():
        return rl.AdaptiveKLController(0.1, target=6.0, horizon=10_000)

    # e = clip(KL / 6 - 1, -0.2, 0.2); beta *= 1 + e * 100 / 10000
    for kl, factor in [(12.0, 1 + 0.2 * 0.01),   # e = 1, clipped to 0.2: up
                       (6.6, 1 + 0.1 * 0.01),    # e = 0.1: up
                       (6.0, 1.0),               # on target: unchanged
                       (5.4, 1 - 0.1 * 0.01),    # e = -0.1: down
                       (0.0, 1 - 0.2 * 0.01)]:   # e = -1, clipped to -0.2: down
        ctl = fresh()
        assert ctl.update(torch.tensor(kl), n_steps=100) == pytest.approx(0.1 * factor)
        assert ctl.value == pytest.approx(0.1 * factor)


def test_kl_controllers_resume_exactly():
    ctl = rl.AdaptiveKLController(0.2, target=6.0, horizon=500)
    for kl in (9.0, 3.0, 7.0):
        ctl.update(kl, n_steps=32)
    resumed = rl.AdaptiveKLController(0.2, target=6.0, horizon=500)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.value == ctl.value
    assert resumed.update(8.0, 32) == ctl.update(8.0, 32)

    fixed = rl.FixedKLController(0.05)
    assert fixed.update(100.0, 32) == 0.05 and fixed.value == 0.05
    other = rl.FixedKLController(0.05)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
    with pytest.raises(DeltatuneError, match="adaptive"):
        other.load_state_dict(ctl.state_dict())
