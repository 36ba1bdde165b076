"""The LoRA layer: a frozen `nn.Linear` plus a trainable low-rank update.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv:2106.09685):

    h = W0 x + s * (B A - B0 A0) dropout(x),   A: (r, in), B: (out, r),  s = alpha / r

B0 A0 is the starting product, kept aside (buffers `lora_A0`, `lora_B0`) only for the inits that
start B A != 0 (PiSSA, OLoRA: `deltatune.methods.lora.init`); with the default init B starts at
zero, there is no B0 A0, and this is plain LoRA. Either way the adapted model equals the base at
step 0 and the base weight is never written. (With a start product and dropout > 0, training
differs from peft's PiSSA, which drops out the input of s B A, W0's principal part, too: here
dropout applies to the update only. In eval, or with dropout 0, the two are the same function.) rsLoRA (Kalajdzievski 2023, arXiv:2312.03732)
scales by alpha / sqrt(r) instead, keeping updates stable as r grows. Parameter names
(`lora_A.weight`, `lora_B.weight`, `base_layer.weight`) follow PEFT's so saved adapters map onto
its file layout key for key.

Subclasses (DoRA, QLoRA's layer) override `forward` / `delta_weight` and reuse the factors.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deltatune.methods.lora.init import STARTS_AT_ZERO, initial_factors
from deltatune.methods.merging import AdditiveMerge


class LoRALinear(AdditiveMerge, nn.Module):
    """Wraps (does not copy) `base_layer`; the base stays frozen, only A and B train. Merging
    folds `delta_weight()` into W0 (`AdditiveMerge`)."""

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False,
                 init: str = "default", dtype: torch.dtype | None = None):
        super().__init__()
        self.base_layer = base_layer
        weight = base_layer.weight
        dtype = dtype or weight.dtype  # a quantised base passes its compute dtype
        self.r = r
        self.init = init
        self.scaling = alpha / (math.sqrt(r) if rslora else r)
        # initialised on the CPU from the CPU generator, then moved: the same seed gives the same
        # adapter (and so the same run) on a GPU as on the CPU
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, dtype=dtype)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, dtype=dtype)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_parameters()
        self.lora_A.to(weight.device)
        self.lora_B.to(weight.device)
        for name in ("lora_A0", "lora_B0"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).to(weight.device))

    def base_weight(self) -> torch.Tensor:
        """W0 as a float tensor (a quantised base layer's subclass dequantises it)."""
        return self.base_layer.weight

    def reset_parameters(self) -> None:
        """A, B from `init`; inits that start B A != 0 also store B0 A0 to subtract."""
        if self.init == "default":  # the original draw, kept bit for bit
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
            return
        a, b = initial_factors(self.init, self.base_weight(), self.r, self.scaling)
        with torch.no_grad():
            self.lora_A.weight.copy_(a)
            self.lora_B.weight.copy_(b)
        if self.init not in STARTS_AT_ZERO:
            self.register_buffer("lora_A0", a.to(self.lora_A.weight.dtype).clone())
            self.register_buffer("lora_B0", b.to(self.lora_B.weight.dtype).clone())

    @property
    def has_start_product(self) -> bool:
        return hasattr(self, "lora_A0")

    def lora_update(self, x: torch.Tensor) -> torch.Tensor:
        """s (B A - B0 A0) dropout(x) in the adapter's dtype (fp32 over a bf16 base: master weights)."""
        x = self.dropout(x.to(self.lora_A.weight.dtype))
        update = self.lora_B(self.lora_A(x))
        if self.has_start_product:
            update = update - (x @ self.lora_A0.t()) @ self.lora_B0.t()
        return self.scaling * update

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W0 x + s (B A - B0 A0) dropout(x); once merged, W0 already holds the update."""
        h = self.base_layer(x)  # (..., out)
        if self.merged:
            return h
        return h + self.lora_update(x).to(h.dtype)

    def delta_weight(self) -> torch.Tensor:
        """s (B A - B0 A0), shape (out, in), computed in fp32 for an accurate merge."""
        b, a = self.lora_B.weight.float(), self.lora_A.weight.float()
        delta = b @ a
        if self.has_start_product:
            delta = delta - self.lora_B0.float() @ self.lora_A0.float()
        return self.scaling * delta

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, init={self.init}, merged={self.merged}"
