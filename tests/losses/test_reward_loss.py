"""Bradley-Terry reward-model loss and metrics against hand-worked closed forms."""

import math

import pytest
import torch

from deltatune.losses.reward import bradley_terry_loss, mean_margin, pairwise_accuracy


def t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float32, requires_grad=grad)


def test_bradley_terry_closed_form():
    # s_c - s_r = 1.0 - 0.25 = 0.75 -> -log sigmoid(0.75) = log(1 + e^-0.75); row 1 is swapped.
    losses = bradley_terry_loss(t(1.0, 0.25), t(0.25, 1.0))
    expected = [math.log(1 + math.exp(-0.75)), math.log(1 + math.exp(0.75))]
    assert torch.allclose(losses, torch.tensor(expected), atol=1e-6)
    assert losses.dtype == torch.float32


def test_margin_and_centring():
    # margin 0.5: -log sigmoid(0.75 - 0.5); per-pair margins too.
    assert bradley_terry_loss(t(1.0), t(0.25), margin=0.5).item() == pytest.approx(
        math.log(1 + math.exp(-0.25)), abs=1e-6)
    per_pair = bradley_terry_loss(t(1.0, 1.0), t(0.25, 0.25), margin=t(0.0, 0.75))
    assert torch.allclose(per_pair, torch.tensor([math.log(1 + math.exp(-0.75)), math.log(2.0)]), atol=1e-6)
    # centring: + 0.01 * (1.0 + 0.25)^2
    centred = bradley_terry_loss(t(1.0), t(0.25), center_coef=0.01)
    assert centred.item() == pytest.approx(math.log(1 + math.exp(-0.75)) + 0.01 * 1.25 ** 2, abs=1e-6)


def test_gradient_closed_form():
    # d/ds_c -log sigmoid(d) = -(1 - sigmoid(d)) = -1 / (1 + e^d), d = 0.75; d/ds_r the opposite.
    s_c, s_r = t(1.0, grad=True), t(0.25, grad=True)
    bradley_terry_loss(s_c, s_r).sum().backward()
    assert s_c.grad.item() == pytest.approx(-1 / (1 + math.exp(0.75)), abs=1e-6)
    assert s_r.grad.item() == pytest.approx(1 / (1 + math.exp(0.75)), abs=1e-6)


def test_metrics():
    chosen, rejected = t(1.0, 0.5, 2.0, -1.0), t(0.0, 0.5, 3.0, -2.0)
    assert pairwise_accuracy(chosen, rejected) == pytest.approx(2 / 4)  # the tie counts as wrong
    assert mean_margin(chosen, rejected) == pytest.approx((1.0 + 0.0 - 1.0 + 1.0) / 4)
