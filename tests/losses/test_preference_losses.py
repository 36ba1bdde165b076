"""Preference losses against hand-worked closed forms, gradient signs, and the dispatch table.

The running example: pc=-3.0, pr=-5.0 (policy), rc=-4.0, rr=-4.5 (reference), beta=0.1, so
h = (pc - rc) - (pr - rr) = (-3 + 4) - (-5 + 4.5) = 1.0 + 0.5 = 1.5 and beta h = 0.15.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from deltatune.errors import DeltatuneError
from deltatune.losses.preference import (
    PREFERENCE_LOSSES,
    PairLogps,
    PreferenceTerms,
    dpo_sigmoid_loss,
    hinge_loss,
    ipo_loss,
    orpo_loss,
    reward_accuracy,
    reward_margin,
    simpo_loss,
)

PC, PR, RC, RR, BETA = -3.0, -5.0, -4.0, -4.5, 0.1


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def softplus(x):  # -log sigmoid(-x) = log(1 + e^x), written out
    return math.log(1.0 + math.exp(x))


def close(tensor, values, tol=1e-6):
    assert tensor.shape == (len(values),)
    assert torch.allclose(tensor, torch.tensor(values, dtype=tensor.dtype), atol=tol), (tensor, values)


def test_dpo_sigmoid_closed_form():
    # Row 0 is the running example; row 1 the same pair with chosen and rejected swapped (h = -1.5).
    terms = dpo_sigmoid_loss(t(PC, PR), t(PR, PC), t(RC, RR), t(RR, RC), BETA)
    close(terms.losses, [softplus(-0.15), softplus(0.15)])  # -log sigmoid(+-0.15)
    close(terms.chosen_rewards, [0.1 * (-3 + 4), 0.1 * (-5 + 4.5)])
    close(terms.rejected_rewards, [0.1 * (-5 + 4.5), 0.1 * (-3 + 4)])
    assert not terms.chosen_rewards.requires_grad and not terms.rejected_rewards.requires_grad


def test_dpo_label_smoothing_closed_form_and_limits():
    eps = 0.2
    terms = dpo_sigmoid_loss(t(PC), t(PR), t(RC), t(RR), BETA, label_smoothing=eps)
    close(terms.losses, [0.8 * softplus(-0.15) + 0.2 * softplus(0.15)])

    # eps -> 0 is plain DPO.
    tiny = dpo_sigmoid_loss(t(PC), t(PR), t(RC), t(RR), BETA, label_smoothing=1e-9)
    close(tiny.losses, [softplus(-0.15)])

    # eps = 0.5: no preference left; the loss is even in h, so swapping the pair changes nothing.
    half = dpo_sigmoid_loss(t(PC, PR), t(PR, PC), t(RC, RR), t(RR, RC), BETA, label_smoothing=0.5)
    assert torch.allclose(half.losses[0], half.losses[1])

    # Conservative DPO stops at a finite margin: beta h* = log((1-eps)/eps), where the loss is
    # the binary entropy of eps and its gradient is zero.
    h_star = math.log(0.8 / 0.2) / BETA
    pc = t(h_star, grad=True)
    at_min = dpo_sigmoid_loss(pc, t(0.0), t(0.0), t(0.0), BETA, label_smoothing=eps)
    close(at_min.losses, [-(0.8 * math.log(0.8) + 0.2 * math.log(0.2))], tol=1e-5)
    at_min.losses.sum().backward()
    assert abs(pc.grad.item()) < 1e-6


def test_ipo_closed_form():
    terms = ipo_loss(t(PC), t(PR), t(RC), t(RR), BETA)
    close(terms.losses, [(1.5 - 1 / (2 * 0.1)) ** 2])  # (1.5 - 5)^2 = 12.25
    close(terms.chosen_rewards, [0.1])
    close(terms.rejected_rewards, [-0.05])
    at_target = ipo_loss(t(5.0), t(0.0), t(0.0), t(0.0), BETA)  # h = 1/(2 beta): zero loss
    close(at_target.losses, [0.0])


def test_hinge_closed_form_and_saturation():
    terms = hinge_loss(t(PC), t(PR), t(RC), t(RR), BETA)
    close(terms.losses, [1 - 0.15])
    pc = t(20.0, grad=True)  # beta h = 2 >= 1: satisfied, no loss and no gradient
    done = hinge_loss(pc, t(0.0), t(0.0), t(0.0), BETA)
    close(done.losses, [0.0])
    done.losses.sum().backward()
    assert pc.grad.item() == 0.0


def test_simpo_closed_form():
    # The paper's regime: beta = 2.5, gamma / beta = 0.5; avg_c - avg_r = 0.5 so the argument is 0.
    terms = simpo_loss(t(-1.0), t(-1.5), beta=2.5, gamma=1.25)
    close(terms.losses, [math.log(2.0)])
    close(terms.chosen_rewards, [2.5 * -1.0])
    close(terms.rejected_rewards, [2.5 * -1.5])
    other = simpo_loss(t(-1.0), t(-1.5), beta=2.0, gamma=0.5)  # 2 * 0.5 - 0.5 = 0.5
    close(other.losses, [softplus(-0.5)])


def _orpo_closed_form(avg_c, avg_r, nll, lam):
    """sigmoid(log odds ratio) = odds_c / (odds_c + odds_r), odds(p) = p / (1 - p), p = e^avg."""
    odds_c = math.exp(avg_c) / -math.expm1(avg_c)
    odds_r = math.exp(avg_r) / -math.expm1(avg_r)
    return nll - lam * math.log(odds_c / (odds_c + odds_r))


def test_orpo_closed_form():
    terms = orpo_loss(t(-0.5), t(-1.2), t(0.5), lam=0.1)
    close(terms.losses, [_orpo_closed_form(-0.5, -1.2, 0.5, 0.1)])
    close(terms.chosen_rewards, [0.1 * -0.5])
    close(terms.rejected_rewards, [0.1 * -1.2])


def test_orpo_is_stable_near_probability_one():
    # Near x = 0, 1 - exp(x) in fp32 keeps only a few bits of x: at these values the naive
    # log(1 - exp(x)) puts the loss ~3e-3 off; log(-expm1(x)) stays within ~3e-7 (measured).
    avg_c, avg_r = t(-2.3e-6, grad=True), t(-4.7e-6, grad=True)
    terms = orpo_loss(avg_c, avg_r, t(0.0), lam=1.0)
    expected = _orpo_closed_form(-2.3e-6, -4.7e-6, 0.0, 1.0)  # float64
    assert abs(terms.losses.item() - expected) < 5e-6
    terms.losses.sum().backward()
    assert torch.isfinite(avg_c.grad).all() and torch.isfinite(avg_r.grad).all()

    # Exactly 0 (probability 1) and below fp32 resolution stay finite (clamped to -1e-6).
    edge_c = t(0.0, -1e-9, -1e-7, grad=True)
    edge = orpo_loss(edge_c, t(-2.0, -2.0, -2.0), t(0.0, 0.0, 0.0), lam=0.1)
    assert torch.isfinite(edge.losses).all()
    edge.losses.sum().backward()
    assert torch.isfinite(edge_c.grad).all()


# Each loss as f(chosen, rejected) with the other inputs fixed: the running example, or
# length-averaged values for the reference-free ones.
SIGNED = {
    "sigmoid": lambda c, r: dpo_sigmoid_loss(c, r, t(RC), t(RR), BETA, 0.1),
    "ipo": lambda c, r: ipo_loss(c, r, t(RC), t(RR), BETA),
    "hinge": lambda c, r: hinge_loss(c, r, t(RC), t(RR), BETA),
    "simpo": lambda c, r: simpo_loss(c, r, 2.5, 1.25),
    "orpo": lambda c, r: orpo_loss(c, r, -c, 0.1),  # chosen NLL = -avg_c, as the recipe passes
}
START = {"sigmoid": (PC, PR), "ipo": (PC, PR), "hinge": (PC, PR), "simpo": (-1.0, -1.5), "orpo": (-0.5, -1.2)}


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_raising_chosen_lowers_loss_and_raising_rejected_raises_it(name):
    c0, r0 = START[name]
    chosen, rejected = t(c0, grad=True), t(r0, grad=True)
    loss = SIGNED[name](chosen, rejected).losses.sum()
    loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()
    assert SIGNED[name](t(c0 + 0.1), t(r0)).losses.item() < loss.item()
    assert SIGNED[name](t(c0), t(r0 + 0.1)).losses.item() > loss.item()


# ---------------------------------------------------------------------------------------------
# The dispatch table. One pair: summed log-probs with 3 chosen and 4 rejected tokens, so the
# averages are pc -6/3 = -2.0, pr -10/4 = -2.5, rc -7.5/3 = -2.5, rr -9/4 = -2.25.

PAIR = PairLogps(policy_chosen=t(-6.0), policy_rejected=t(-10.0),
                 chosen_tokens=torch.tensor([3]), rejected_tokens=torch.tensor([4]),
                 ref_chosen=t(-7.5), ref_rejected=t(-9.0))
CFG = SimpleNamespace(beta=0.1, label_smoothing=0.1, simpo_gamma=0.05, orpo_lambda=0.1)

EXPECTED = {  # name: (loss, chosen reward, rejected reward), by hand
    # sums: h = (-6 + 7.5) - (-10 + 9) = 2.5, beta h = 0.25
    "sigmoid": (0.9 * softplus(-0.25) + 0.1 * softplus(0.25), 0.1 * 1.5, 0.1 * -1.0),
    # averages: h = (-2 + 2.5) - (-2.5 + 2.25) = 0.75
    "ipo": ((0.75 - 5.0) ** 2, 0.1 * 0.5, 0.1 * -0.25),
    "hinge": (1 - 0.25, 0.1 * 1.5, 0.1 * -1.0),
    # 0.1 * (-2 + 2.5) - 0.05 = 0
    "simpo": (math.log(2.0), 0.1 * -2.0, 0.1 * -2.5),
    # chosen NLL = 6 / 3 = 2
    "orpo": (_orpo_closed_form(-2.0, -2.5, 2.0, 0.1), 0.1 * -2.0, 0.1 * -2.5),
}


def test_table_rows():
    flags = {name: (s.needs_reference, s.length_normalised, s.needs_chosen_nll)
             for name, s in PREFERENCE_LOSSES.items()}
    assert flags == {
        "sigmoid": (True, False, False),
        "ipo": (True, True, False),
        "hinge": (True, False, False),
        "simpo": (False, True, False),
        "orpo": (False, True, True),
    }


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_table_dispatch(name):
    spec = PREFERENCE_LOSSES[name]
    terms = spec.fn(PAIR, CFG)
    assert isinstance(terms, PreferenceTerms)
    loss, chosen_reward, rejected_reward = EXPECTED[name]
    close(terms.losses, [loss])
    close(terms.chosen_rewards, [chosen_reward])
    close(terms.rejected_rewards, [rejected_reward])

    no_ref = PairLogps(PAIR.policy_chosen, PAIR.policy_rejected, PAIR.chosen_tokens, PAIR.rejected_tokens)
    if spec.needs_reference:
        with pytest.raises(DeltatuneError, match="preference.loss"):
            spec.fn(no_ref, CFG)
    else:
        close(spec.fn(no_ref, CFG).losses, [loss])


def test_empty_answer_averages_to_zero_not_nan():
    pair = PairLogps(t(0.0), t(-4.0), torch.tensor([0]), torch.tensor([2]))
    for name in ("simpo", "orpo"):
        assert torch.isfinite(PREFERENCE_LOSSES[name].fn(pair, CFG).losses).all()


def test_reward_accuracy_and_margin():
    terms = PreferenceTerms(losses=t(0.0, 0.0, 0.0), chosen_rewards=t(1.0, 0.5, 2.0),
                            rejected_rewards=t(0.0, 0.5, 3.0))
    assert reward_accuracy(terms) == pytest.approx(1 / 3)  # the tie counts as wrong
    assert reward_margin(terms) == pytest.approx((1.0 + 0.0 - 1.0) / 3)
