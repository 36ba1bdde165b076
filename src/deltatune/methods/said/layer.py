"""Intrinsic SAID: every target weight moves along one shared random low-dimensional subspace.

Aghajanyan, Zettlemoyer & Gupta 2021, "Intrinsic Dimensionality Explains the Effectiveness of
Language Model Fine-Tuning" (arXiv:2012.13255), Structure-Aware Intrinsic Dimension (Eq. 3):

    W_t = W0_t + lambda_t * reshape(P theta)_t,    theta: (d - m,) zeros,  lambda: (m,) ones

P: a fixed (n, d - m) Fastfood projection (`fastfood.py`) over the concatenation of the m
target weights' n entries in model order; slice t is tensor t's entries. theta starts at
zero, so the model is the base at step 0; lambda (one scalar per tensor, the "structure-aware"
part) starts at one.

`SAIDParams` (on the model as `said`) holds theta, lambda and the projection; each target is
wrapped by `SAIDLinear`, which rebuilds its weight every forward and leaves W0 untouched
(switch-off, serving over a shared base). P theta is computed once per model forward and
shared by every layer: `projected()` recomputes when theta changed, when grad mode changed, or,
with grad enabled, when a layer asks for its slice a second time (the next forward has begun:
autograd frees each forward's graph at backward, so one graph is never reused). Without grad
(evaluation, generation) the projection is kept until theta changes: one per decoded token
would cost seconds each on SmolLM2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltatune.methods.merging import AdditiveMerge
from deltatune.methods.said.fastfood import FastfoodProjection

SLOT = "said"  # on the model: `said.theta`, `said.lambdas`


class SAIDParams(nn.Module):
    """theta (d - m,), lambda (m,) and the projection onto tensors of `sizes` entries."""

    def __init__(self, sizes: list[int], d: int, seed: int, device=None):
        super().__init__()
        self.sizes = list(sizes)
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)
        m = len(self.sizes)
        self.theta = nn.Parameter(torch.zeros(d - m, dtype=torch.float32, device=device))
        self.lambdas = nn.Parameter(torch.ones(m, dtype=torch.float32, device=device))
        self.projection = FastfoodProjection(d - m, self.offsets[-1], seed, device=device)
        self._cache: tuple[torch.Tensor, ...] | None = None
        self._key: tuple | None = None
        self._used: set[int] = set()

    def projected(self, t: int) -> torch.Tensor:
        """(P theta) restricted to tensor t's entries: (sizes[t],)."""
        key = (self.theta._version, torch.is_grad_enabled(), self.theta.device)
        if self._cache is None or key != self._key or (key[1] and t in self._used):
            # one split, not a slice per tensor: a slice's backward writes its gradient into a
            # zero tensor of all n entries (m of them per step, ~90 GB of traffic on SmolLM2);
            # split's backward concatenates the m pieces' gradients once
            self._cache = torch.split(self.projection(self.theta), self.sizes)  # m x (sizes[t],)
            self._key, self._used = key, set()
        self._used.add(t)
        return self._cache[t]

    def delta(self, t: int, shape: torch.Size) -> torch.Tensor:
        """lambda_t * reshape(P theta)_t."""
        return self.lambdas[t] * self.projected(t).view(shape)

    def extra_repr(self) -> str:
        return f"d={self.theta.numel() + self.lambdas.numel()}, tensors={len(self.sizes)}, n={self.offsets[-1]}"


class SAIDLinear(AdditiveMerge, nn.Module):
    """Wraps (does not copy) `base_layer`; its weight is W0 + lambda_t * (P theta)_t.

    The shared `SAIDParams` is a plain reference, not a child module (it lives once, on the
    model), so the wrapper owns no tensors of its own."""

    def __init__(self, base_layer: nn.Linear, params: SAIDParams, t: int):
        super().__init__()
        self.base_layer = base_layer
        self.__dict__["_params"] = params
        self.t = t
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        return self._params.delta(self.t, self.base_layer.weight.shape)  # (out, in), fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = (W0 + lambda_t * reshape(P theta)_t) x + b; merged: W0 already holds it."""
        if self.merged:
            return self.base_layer(x)
        delta = self.delta_weight()
        weight = self.base_layer.weight.to(delta.dtype) + delta  # (out, in)
        bias = self.base_layer.bias
        bias = None if bias is None else bias.to(delta.dtype)
        return F.linear(x.to(delta.dtype), weight, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"tensor={self.t}, merged={self.merged}"
