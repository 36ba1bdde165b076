"""A structured random projection R^d -> R^n (the Fastfood transform), never stored as a matrix.

    proj = FastfoodProjection(d=1000, n=10_000_000, seed=0)   # buffers O(n + d), not O(n * d)
    update = proj(theta)                                       # (n,), differentiable in theta

Le, Sarlós & Smola 2013 (Fastfood), as used for intrinsic dimension by Li et al. 2018
(arXiv:1804.08838) and Aghajanyan et al. 2021 (arXiv:2012.13255). With L = 2^ceil(log2 d),
theta is zero-padded to L and each block b of L outputs is

    y_b = H G_b Pi_b H B_b theta_pad / (sqrt(L * sum(G_b^2)) * sqrt(n / L))

H: the L x L Walsh-Hadamard matrix (entries +-1, applied in O(L log L) by `fwht`), B_b:
diagonal random signs, Pi_b: a random permutation, G_b: diagonal N(0, 1). The blocks are
independent; their outputs concatenate and are cut to n. Each block's columns have squared
norm L/n, so each column of the whole n x d projection has norm ~1 (Li et al.'s unit-length
columns; with one block this is their divisor exactly). Memory: B (int8), Pi (int32), G
(fp32) per output position — about 9 bytes x (n + L) — regenerated from `seed` on demand.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_FACTOR_BITS = 6  # fwht's dense factors are at most 64 x 64


def hadamard(size: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The unnormalised Sylvester Hadamard matrix (size a power of 2): H_1 = [1],
    H_2k = [[H_k, H_k], [H_k, -H_k]]; symmetric, H @ H = size * I."""
    h = torch.ones(1, 1, dtype=dtype, device=device)
    while h.shape[0] < size:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    return h


def fwht(x: torch.Tensor) -> torch.Tensor:
    """x @ H along the last axis (its length L a power of 2), in O(L log L) per row.

    Sylvester matrices factor as Kronecker products, H_L = H_f1 (x) H_f2 (x) ... with each
    f <= 2^_FACTOR_BITS, so each stage multiplies one factor axis by a small dense H_f (a
    matmul, far faster on CPU than 17 butterfly passes) and rotates that axis to the end;
    after the last stage the axes are back in order. Differentiable (only matmuls)."""
    *batch, length = x.shape
    bits = length.bit_length() - 1
    rows = x.reshape(-1, length)  # (N, L)
    while bits > 0:
        step = min(bits, _FACTOR_BITS)
        f = 1 << step
        h = hadamard(f, x.dtype, x.device)  # (f, f)
        rows = torch.matmul(rows.view(rows.shape[0], f, length // f).transpose(1, 2), h)  # (N, L/f, f)
        rows = rows.reshape(-1, length)
        bits -= step
    return rows.reshape(*batch, length)


def block_length(d: int) -> int:
    """L: the smallest power of two >= d."""
    return 1 << max(0, math.ceil(math.log2(d)))


class FastfoodProjection(nn.Module):
    """theta (d,) -> P theta (n,), P the stacked Fastfood blocks above, drawn from `seed`.

    The random diagonals and permutations are non-persistent buffers: never saved (the seed
    regenerates them bit for bit), moved with the model by `.to()`."""

    def __init__(self, d: int, n: int, seed: int, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        if d < 1 or n < 1:
            raise ValueError(f"FastfoodProjection needs d >= 1 and n >= 1, got d={d}, n={n}")
        self.d, self.n, self.seed = d, n, seed
        self.length = length = block_length(d)
        self.blocks = blocks = -(-n // length)
        generator = torch.Generator().manual_seed(seed)
        signs = torch.empty(blocks, length, dtype=torch.int8)
        perm = torch.empty(blocks * length, dtype=torch.int32)
        gauss = torch.empty(blocks, length, dtype=dtype)
        for b in range(blocks):  # block by block from one generator: the seed fixes every draw
            signs[b] = torch.randint(0, 2, (length,), generator=generator, dtype=torch.int8) * 2 - 1
            order = torch.randperm(length, generator=generator)  # Pi_b
            perm[b * length:(b + 1) * length] = (order + b * length).to(torch.int32)
            gauss[b] = torch.randn(length, generator=generator, dtype=torch.float32).to(dtype)
        scale = 1.0 / (torch.sqrt(length * gauss.double().square().sum(dim=1)) * math.sqrt(n / length))
        self.register_buffer("signs", signs.to(device), persistent=False)  # B: (blocks, L) +-1
        self.register_buffer("perm", perm.to(device), persistent=False)  # Pi: (blocks * L,) flat positions
        self.register_buffer("gauss", gauss.to(device), persistent=False)  # G: (blocks, L)
        self.register_buffer("scale", scale.to(dtype)[:, None].to(device), persistent=False)  # (blocks, 1)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        """P theta: (d,) -> (n,)."""
        x = F.pad(theta, (0, self.length - self.d))  # (L,)
        y = fwht(self.signs.to(theta.dtype) * x)  # H B theta: (blocks, L)
        y = y.flatten().index_select(0, self.perm).view(self.blocks, self.length)  # Pi H B theta
        y = fwht(self.gauss.to(theta.dtype) * y)  # H G Pi H B theta
        return (y * self.scale.to(theta.dtype)).flatten()[: self.n]  # (n,)

    def buffer_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def extra_repr(self) -> str:
        return f"d={self.d}, n={self.n}, L={self.length}, blocks={self.blocks}, seed={self.seed}"
