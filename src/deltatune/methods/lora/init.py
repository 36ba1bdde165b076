"""How a LoRA-family layer's A and B start (`method.init`).

    a, b = initial_factors("pissa", weight, r, scaling)      # (r, in), (out, r), fp32

default (Hu et al. 2021): A Kaiming-uniform with a = sqrt(5) (nn.Linear's own init), B = 0.
gaussian: A ~ N(0, (1/r)^2), B = 0 (peft's "gaussian").
pissa (Meng et al. 2024, arXiv:2404.02948): W0 = U S V^T; with the top r triplets,
    A = sqrt(S_r / s) V_r^T,  B = U_r sqrt(S_r / s)      so that  s B A = U_r S_r V_r^T
(s = the layer's scaling): the update starts on W0's principal subspace, which trains faster.
olora (Büyükakyüz 2024, arXiv:2406.01775): W0 = Q R (reduced QR),
    A = R[:r],  B = Q[:, :r]     (as peft: s B A is Q_r R_r scaled by s, not divided by it)
Both start with B A != 0: the layer keeps the starting product aside and subtracts it, so the
model still equals the base at step 0 (peft instead writes W0 - s B A into the base weight; the
function of A and B is the same, up to rounding).

Random draws come from torch's default CPU generator, so a seeded run initialises the same
adapter on any device.
"""

from __future__ import annotations

import math

import torch

STARTS_AT_ZERO = {"default", "gaussian"}  # B = 0: no starting product to subtract


def initial_factors(init: str, weight: torch.Tensor, r: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) in fp32 on the CPU for a base `weight` of shape (out, in) (see module docstring)."""
    out_features, in_features = weight.shape
    if init == "default":
        a = torch.empty(r, in_features)
        torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        return a, torch.zeros(out_features, r)
    if init == "gaussian":
        return torch.randn(r, in_features) / r, torch.zeros(out_features, r)
    w = weight.detach().to(device="cpu", dtype=torch.float32)
    if init == "pissa":
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = torch.sqrt(s[:r] / scaling)
        return root[:, None] * vh[:r], u[:, :r] * root[None, :]
    if init == "olora":
        q, rr = torch.linalg.qr(w)
        return rr[:r].contiguous(), q[:, :r].contiguous()
    raise ValueError(f"unknown LoRA init {init!r}; known: default, gaussian, pissa, olora")
