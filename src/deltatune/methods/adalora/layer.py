"""The AdaLoRA layer: a frozen `nn.Linear` plus an update in SVD form, and the per-triplet
importance scores that decide which singular values survive.

Zhang et al. 2023, "AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning"
(arXiv:2303.10512), Sec. 3.1, with peft's scale:

    h = W0 x + alpha / (ranknum + 1e-5) * B (E ⊙ A) dropout(x)
        A: (r, in) right singular vectors, E: (r, 1) singular values, B: (out, r) left ones

`ranknum` is a buffer holding init_r (peft keeps it at the initial rank for the whole run, so
the scale does not jump as triplets are pruned). Start as peft: A, B ~ N(0, 0.02^2), E = 0, so
the adapted model equals the base. Pruning a triplet sets its E_i to zero (A and B keep their
rows / columns); during the budget phase E_i may grow back until the next pruning, after
T - tfinal the final mask is re-applied after every step (`deltatune.methods.adalora.allocator`).

Importance of one entry w (Sec. 3.2; peft's `RankAllocator`), updated from the step's gradient:

    I = |w * dL/dw|,   Ī <- β1 Ī + (1 - β1) I,   Ū <- β2 Ū + (1 - β2) |I - Ī|,   s = Ī * Ū
    triplet i:  S_i = s(E_i) + mean_j s(A_ij) + mean_j s(B_ji)

Ī and Ū of A, E, B (`sensitivity_*`, `uncertainty_*`), the rank mask (`rank_mask`, 1 = kept)
and `ranknum` are persistent buffers: they are in the method's state, so checkpoints keep them
and a resumed run allocates exactly as the uninterrupted one. Parameter names `lora_A`,
`lora_E`, `lora_B` follow peft's (without its adapter-name level).
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.methods.merging import AdditiveMerge

PARTS = ("A", "E", "B")
SCORE_BUFFERS = tuple(f"{kind}_{part}" for kind in ("sensitivity", "uncertainty") for part in PARTS)
INIT_STD = 0.02  # peft's normal init of A and B


class SVDLinear(AdditiveMerge, nn.Module):
    """Wraps (does not copy) `base_layer`; the base stays frozen, only A, E, B train (fp32)."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer
        self.r, self.alpha = r, alpha
        in_features, out_features = base_layer.in_features, base_layer.out_features
        # drawn on the CPU from the CPU generator, then moved: same seed, same adapter on any device
        self.lora_A = nn.Parameter(torch.randn(r, in_features) * INIT_STD)  # (r, in)
        self.lora_E = nn.Parameter(torch.zeros(r, 1))  # (r, 1)
        self.lora_B = nn.Parameter(torch.randn(out_features, r) * INIT_STD)  # (out, r)
        self.register_buffer("ranknum", torch.tensor([float(r)]))
        for part in PARTS:
            shape = getattr(self, f"lora_{part}").shape
            self.register_buffer(f"sensitivity_{part}", torch.zeros(shape))  # Ī
            self.register_buffer(f"uncertainty_{part}", torch.zeros(shape))  # Ū
        self.register_buffer("rank_mask", torch.ones(r))  # 1 = triplet kept by the last allocation
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.to(base_layer.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W0 x + alpha / (ranknum + 1e-5) * B (E ⊙ A) dropout(x); merged: W0 holds the update."""
        h = self.base_layer(x)  # (..., out)
        if self.merged:
            return h
        x = self.dropout(x.to(self.lora_A.dtype))
        update = x @ (self.lora_A * self.lora_E).T @ self.lora_B.T  # (..., out)
        return h + (update * self.alpha / (self.ranknum + 1e-5)).to(h.dtype)

    def delta_weight(self) -> torch.Tensor:
        """alpha / (ranknum + 1e-5) * B (E ⊙ A), shape (out, in), fp32."""
        return self.lora_B @ (self.lora_A * self.lora_E) * self.alpha / (self.ranknum + 1e-5)

    def orthogonality(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(||A A^T - I||_F, ||B^T B - I||_F): how far A's rows / B's columns are from orthonormal."""
        a, b = self.lora_A, self.lora_B
        eye = torch.eye(self.r, device=a.device, dtype=a.dtype)
        return torch.linalg.norm(a @ a.T - eye), torch.linalg.norm(b.T @ b - eye)

    @torch.no_grad()
    def update_importance(self, beta1: float, beta2: float) -> None:
        """Ī and Ū of every entry of A, E, B from this step's gradients (module docstring)."""
        for part in PARTS:
            param = getattr(self, f"lora_{part}")
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            instant = (param * grad).abs()  # I
            smooth, unc = getattr(self, f"sensitivity_{part}"), getattr(self, f"uncertainty_{part}")
            smooth.copy_(beta1 * smooth + (1 - beta1) * instant)
            unc.copy_(beta2 * unc + (1 - beta2) * (instant - smooth).abs())

    @torch.no_grad()
    def reset_importance(self) -> None:
        """Zero Ī and Ū (peft drops its scores once the final mask is fixed)."""
        for name in SCORE_BUFFERS:
            getattr(self, name).zero_()

    def triplet_scores(self) -> torch.Tensor:
        """S_i = s(E_i) + (mean_j s(A_ij) + mean_j s(B_ji)), shape (r,)."""
        score = {part: getattr(self, f"sensitivity_{part}") * getattr(self, f"uncertainty_{part}") for part in PARTS}
        return score["E"].view(-1) + (score["A"].mean(dim=1) + score["B"].mean(dim=0))

    @torch.no_grad()
    def keep_triplets(self, keep: torch.Tensor) -> None:
        """Prune the triplets where `keep` (bool, (r,)) is False: E_i = 0; remember the mask."""
        self.lora_E.masked_fill_(~keep.view(-1, 1), 0.0)
        self.rank_mask.copy_(keep.to(self.rank_mask.dtype))

    @torch.no_grad()
    def reapply_mask(self) -> None:
        """Zero the E_i of the triplets the last allocation pruned (the fixed final phase)."""
        self.lora_E.masked_fill_(self.rank_mask.view(-1, 1) == 0, 0.0)

    @property
    def rank(self) -> int:
        """Triplets kept by the last allocation (init_r before any)."""
        return int(self.rank_mask.sum())

    def extra_repr(self) -> str:
        return f"init_r={self.r}, rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"
