"""sequence_logps / token_logps equal full logits + log_softmax + gather (values and gradients)."""

import torch
from torch import nn

from deltatune.losses.logps import sequence_logps, token_logps


def _setup():
    torch.manual_seed(0)
    head = nn.Linear(8, 11)
    hidden = torch.randn(3, 6, 8, requires_grad=True)
    labels = torch.randint(0, 11, (3, 6))
    labels[:, :2] = -100  # prompt
    labels[1, 4:] = -100  # padding
    labels[2, :] = -100   # a row with nothing labelled
    return head, hidden, labels


def _direct(head, hidden, labels):
    """The plain way: head on every position, log_softmax, gather the shifted labels."""
    logp = torch.log_softmax(head(hidden).float()[:, :-1], dim=-1)  # (B, T-1, V)
    targets = labels[:, 1:]
    mask = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * mask  # (B, T-1)
    return picked, mask


def test_token_and_sequence_logps_match_direct_computation():
    head, hidden, labels = _setup()
    ref_tok, ref_mask = _direct(head, hidden, labels)

    tok, mask = token_logps(hidden, head, labels)
    assert tok.dtype == torch.float32 and tok.shape == (3, 5)
    assert torch.equal(mask, ref_mask)
    assert torch.allclose(tok, ref_tok, atol=1e-6)
    assert torch.all(tok[~mask] == 0)

    sums, counts = sequence_logps(hidden, head, labels)
    assert sums.dtype == torch.float32 and counts.dtype == torch.long
    assert counts.tolist() == [4, 2, 0]  # labels at positions 2..5, 2..3, none
    assert torch.allclose(sums, ref_tok.sum(-1), atol=1e-6)
    assert sums[2].item() == 0.0


def test_gradients_match_direct_computation():
    head, hidden, labels = _setup()
    weights = torch.tensor([1.0, -2.0, 3.0])  # distinct per row so row mix-ups would show

    (_direct(head, hidden, labels)[0].sum(-1) * weights).sum().backward()
    ref = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad = None
    head.zero_grad()

    (sequence_logps(hidden, head, labels)[0] * weights).sum().backward()
    for got, want in zip([hidden.grad, head.weight.grad, head.bias.grad], ref):
        assert torch.allclose(got, want, atol=1e-6)
    assert torch.all(hidden.grad[2] == 0)  # the unlabelled row gets no gradient


def test_head_sees_only_labelled_positions_and_empty_batch_backprops():
    head, hidden, labels = _setup()
    seen = []
    sequence_logps(hidden, lambda x: seen.append(x.shape) or head(x), labels)
    assert seen == [torch.Size([6, 8])]  # 4 + 2 labelled positions, not 3 x 5

    none = torch.full((3, 6), -100)
    tok, mask = token_logps(hidden, head, none)
    assert tok.shape == (3, 5) and not mask.any() and torch.all(tok == 0)
    sums, counts = sequence_logps(hidden, head, none)
    assert sums.tolist() == [0.0, 0.0, 0.0] and counts.tolist() == [0, 0, 0]
    sums.sum().backward()  # a graph exists; backward is a no-op, not an error
