"""Intrinsic SAID: the Fastfood projection against its dense definition H G Pi H B, seeds,
gradients w.r.t. theta and lambda against a dense-matrix reference, O(d + n) memory at a size
where the dense matrix could never exist, and the config errors.

    OMP_NUM_THREADS=1 .venv/bin/pytest tests/methods/test_said.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call
from transformers import AutoModelForCausalLM

from deltatune.errors import DeltatuneError
from deltatune.forward import all_logits
from deltatune.methods import core
from deltatune.methods.said import FastfoodProjection, SAIDConfig, fwht, hadamard


@pytest.fixture(scope="module")
def base(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))


def _sylvester(size: int) -> torch.Tensor:
    """H by its recursive definition, independent of `hadamard`."""
    if size == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    h = _sylvester(size // 2)
    return torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64), h)


@pytest.mark.parametrize("size", [1, 2, 8, 64, 128, 1024])
def test_fwht_is_the_hadamard_product(size):
    x = torch.randn(3, size, dtype=torch.float64)
    torch.testing.assert_close(fwht(x), x @ _sylvester(size))
    torch.testing.assert_close(hadamard(size) @ hadamard(size), size * torch.eye(size, dtype=torch.float64))


def _dense(proj: FastfoodProjection) -> torch.Tensor:
    """The (n, d) matrix the projection applies, built from its definition block by block."""
    L, d = proj.length, proj.d
    h = _sylvester(L)
    blocks = []
    for b in range(proj.blocks):
        B = torch.diag(proj.signs[b].double())
        perm = proj.perm[b * L:(b + 1) * L].long() - b * L
        Pi = torch.eye(L, dtype=torch.float64)[perm]  # (Pi x)_i = x_{perm_i}
        G = torch.diag(proj.gauss[b].double())
        blocks.append(float(proj.scale[b]) * h @ G @ Pi @ h @ B)
    return torch.cat(blocks)[: proj.n, :d]  # padding columns never meet theta


def test_projection_equals_its_dense_definition_and_has_unit_columns():
    proj = FastfoodProjection(d=5, n=45, seed=7, dtype=torch.float64)  # L = 8, 6 blocks, the last cut
    dense = _dense(proj)
    theta = torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(proj(theta), dense @ theta)
    big = FastfoodProjection(d=16, n=16 * 64, seed=1, dtype=torch.float64)  # whole blocks: exact unit norm
    torch.testing.assert_close(_dense(big).norm(dim=0), torch.ones(16, dtype=torch.float64))


def test_same_seed_same_projection_and_weights(base):
    theta = torch.randn(300)
    a, b, c = (FastfoodProjection(300, 5000, seed=s) for s in (3, 3, 4))
    assert torch.equal(a(theta), b(theta)) and not torch.allclose(a(theta), c(theta))
    weights = []
    for _ in range(2):
        model = copy.deepcopy(base)
        installed = core.apply_method(model, SAIDConfig(d=200, seed=5))
        with torch.no_grad():
            installed.params.theta.copy_(torch.linspace(-1, 1, installed.params.theta.numel()))
            weights.append([w.base_layer.weight + w.delta_weight() for w in installed.wrappers.values()])
    assert all(torch.equal(x, y) for x, y in zip(*weights))


def test_gradcheck_in_float64():
    proj = FastfoodProjection(d=6, n=40, seed=2, dtype=torch.float64)
    theta = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(proj, (theta,))


def test_model_gradients_match_a_dense_reference(base, ids):
    model = copy.deepcopy(base)
    installed = core.apply_method(model, SAIDConfig(d=60, seed=0))
    params = installed.params
    with torch.no_grad():
        params.theta.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
        params.lambdas.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(2))
    all_logits(model, ids).logsumexp(-1).sum().backward()

    # reference: P as a dense (n, d - m) matrix from the projection's columns, and dL/dW of the
    # plain base evaluated at the same adapted weights W_t = W0_t + lambda_t (P theta)_t
    k = params.theta.numel()
    dense = torch.stack([params.projection(e) for e in torch.eye(k)], dim=1).detach()  # (n, k)
    shift = dense @ params.theta.detach()  # (n,)
    names = list(installed.wrappers)
    weights = {}
    for t, name in enumerate(names):
        w0 = installed.wrappers[name].base_layer.weight.detach()
        part = shift[params.offsets[t]:params.offsets[t + 1]].view(w0.shape)
        weights[f"{name}.weight"] = (w0 + params.lambdas[t].detach() * part).requires_grad_(True)
    installed.detach()
    plain = copy.deepcopy(base)
    logits = functional_call(plain, weights, args=(), kwargs={"input_ids": ids}).logits
    grads = torch.autograd.grad(logits.logsumexp(-1).sum(), list(weights.values()))
    flat = [g.flatten() for g in grads]
    want_theta = sum(params.lambdas[t].detach() * dense[params.offsets[t]:params.offsets[t + 1]].T @ flat[t]
                     for t in range(len(names)))
    want_lambda = torch.stack([shift[params.offsets[t]:params.offsets[t + 1]] @ flat[t] for t in range(len(names))])
    torch.testing.assert_close(params.theta.grad, want_theta, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(params.lambdas.grad, want_lambda, rtol=1e-4, atol=1e-5)


def test_memory_is_linear_in_d_plus_n():
    """d = 1e5 over n = 1e7: a dense projection would be 4e12 bytes; this one holds ~9 bytes per
    output position and runs forward and backward."""
    d, n = 100_000, 10_000_000
    proj = FastfoodProjection(d, n, seed=0)
    assert proj.buffer_bytes() <= 10 * (n + proj.length)
    theta = torch.randn(d, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = proj(theta)
    assert out.shape == (n,) and 0.95 < float(out.detach().norm() / theta.detach().norm()) < 1.05  # ~unit columns
    out[:1000].sum().backward()
    assert theta.grad.shape == (d,) and torch.isfinite(theta.grad).all()


def test_starts_at_the_base_and_counts_d(base, ids):
    model = copy.deepcopy(base)
    core.apply_method(model, SAIDConfig(d=100))
    assert core.count_parameters(model)[0] == 100
    with torch.no_grad():
        torch.testing.assert_close(all_logits(model, ids), all_logits(base, ids), rtol=0, atol=0)


def test_d_out_of_range_is_a_clear_error(base):
    with pytest.raises(DeltatuneError, match="method.d=100000 exceeds the 73728 weights"):
        core.apply_method(copy.deepcopy(base), SAIDConfig(d=100_000))
    with pytest.raises(DeltatuneError, match="method.d=14 leaves nothing to project"):
        core.apply_method(copy.deepcopy(base), SAIDConfig(d=14))


def test_one_projection_per_training_forward_and_one_for_all_of_generation(base, ids):
    """Cost, not numbers: P theta (~1e8 entries on SmolLM2) is computed once per training
    forward and shared by every layer through one split (a slice per tensor would make backward
    build a full-size zero gradient per tensor: ~90 GB of traffic per SmolLM2 step), and under
    no_grad it is kept until theta changes (not recomputed for every decoded token)."""
    from deltatune.generation import SamplingParams, generate

    model = copy.deepcopy(base)
    core.apply_method(model, SAIDConfig(d=100))
    params = model.said
    calls = []
    params.projection.register_forward_hook(lambda *args: calls.append(1))
    model.train()
    loss = all_logits(model, ids).square().mean()
    assert len(calls) == 1
    piece = params.projected(0)
    assert type(piece.grad_fn).__name__.startswith("SplitWithSizesBackward"), piece.grad_fn
    loss.backward()
    model.eval()
    calls.clear()

    class _Tok:
        pad_token_id, eos_token_id = 0, None

        def decode(self, token_ids, skip_special_tokens=True):
            return " ".join(map(str, token_ids))

    with torch.no_grad():
        generate(model, _Tok(), [ids[0].tolist()], SamplingParams(max_new_tokens=4))
    assert len(calls) == 1  # one projection for the prompt and all four decoded tokens
    with torch.no_grad():
        params.theta.add_(0.1)  # a changed theta is projected again
        all_logits(model, ids)
    assert len(calls) == 2
