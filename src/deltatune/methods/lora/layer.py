"""The LoRA layer: a frozen `nn.Linear` plus a trainable low-rank update.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685):

    h = W0 x + (alpha / r) * B A dropout(x),   A: (r, in), B: (out, r)

A starts Kaiming-uniform (a = sqrt(5), nn.Linear's own init, as the reference implementation),
B starts at zero so the adapted model equals the base at step 0. rsLoRA (Kalajdzievski 2023,
arXiv:2312.03732) scales by alpha / sqrt(r) instead, keeping updates stable as r grows.
Parameter names (`lora_A.weight`, `lora_B.weight`, `base_layer.weight`) follow PEFT's so saved
adapters map onto its file layout key for key.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """Wraps (does not copy) `base_layer`; the base stays frozen, only A and B train."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        super().__init__()
        self.base_layer = base_layer
        weight = base_layer.weight
        self.r = r
        self.scaling = alpha / (math.sqrt(r) if rslora else r)
        # initialised on the CPU from the CPU generator, then moved: the same seed gives the same
        # adapter (and so the same run) on a GPU as on the CPU
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, dtype=weight.dtype)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, dtype=weight.dtype)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_parameters()
        self.lora_A.to(weight.device)
        self.lora_B.to(weight.device)

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W0 x + (alpha/r) B A dropout(x); once merged, W0 already holds the update."""
        h = self.base_layer(x)  # (..., out)
        if self.merged:
            return h
        # the adapter may be fp32 over a bf16 base (master weights): compute in its dtype
        update = self.lora_B(self.lora_A(self.dropout(x.to(self.lora_A.weight.dtype))))
        return h + (self.scaling * update).to(h.dtype)

    def delta_weight(self) -> torch.Tensor:
        """(alpha/r) B @ A, shape (out, in), computed in fp32 for an accurate merge."""
        b, a = self.lora_B.weight.float(), self.lora_A.weight.float()
        return self.scaling * (b @ a)

    @torch.no_grad()
    def merge(self) -> None:
        """W0 += (alpha/r) B A: inference without the extra matmuls (do not train while merged)."""
        if not self.merged:
            w = self.base_layer.weight
            w.copy_((w.float() + self.delta_weight()).to(w.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 -= (alpha/r) B A: back to the separate base + update (equal up to rounding)."""
        if self.merged:
            w = self.base_layer.weight
            w.copy_((w.float() - self.delta_weight()).to(w.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, merged={self.merged}"
