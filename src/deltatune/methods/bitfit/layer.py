"""The BitFit layer: a frozen `nn.Linear` whose bias trains.

Ben Zaken, Ravfogel & Goldberg 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models" (arXiv:2106.10199): freeze every weight, train only
the bias terms.

    h = W0 x + b0 + δ,    δ: (out,) trainable, zero at the start;  b0 = 0 when the base has none

The trained bias is kept beside the frozen layer as `bitfit_bias` (δ), so the base tensors stay
bit-identical (switch-off, serving over a shared base) and a Linear that already has a bias b0
trains it exactly as BitFit does: the effective bias b0 + δ gets the gradient and Adam update b
itself would get (biases are not weight-decayed). `merge` writes b0 + δ into the base layer's
bias, creating the bias Parameter when the base had none (Llama).
"""

from __future__ import annotations

import torch
from torch import nn


class BitFitLinear(nn.Module):
    """Wraps (does not copy) `base_layer`; only `bitfit_bias` (out,) trains."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        weight = base_layer.weight
        dtype = torch.promote_types(weight.dtype, torch.float32)  # fp32 master over a bf16 base
        self.bitfit_bias = nn.Parameter(torch.zeros(base_layer.out_features, dtype=dtype, device=weight.device))
        self.adds_bias = base_layer.bias is None  # the base has no bias: merge creates one
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W0 x + b0 + δ; once merged, the base layer's bias already holds b0 + δ."""
        h = self.base_layer(x)  # (..., out)
        if self.merged:
            return h
        return (h.to(self.bitfit_bias.dtype) + self.bitfit_bias).to(h.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """b ← b0 + δ in the base layer (a new bias Parameter, frozen, when it had none)."""
        if self.merged:
            return
        weight = self.base_layer.weight
        if self.adds_bias:
            self.base_layer.bias = nn.Parameter(self.bitfit_bias.detach().to(weight.dtype).clone(),
                                                requires_grad=False)
        else:
            bias = self.base_layer.bias
            bias.copy_((bias.to(self.bitfit_bias.dtype) + self.bitfit_bias).to(bias.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Back to the frozen base bias (dropped again when merge created it)."""
        if not self.merged:
            return
        if self.adds_bias:
            self.base_layer.bias = None
        else:
            bias = self.base_layer.bias
            bias.copy_((bias.to(self.bitfit_bias.dtype) - self.bitfit_bias).to(bias.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return f"adds_bias={self.adds_bias}, merged={self.merged}"
