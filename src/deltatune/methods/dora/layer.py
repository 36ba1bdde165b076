"""The DoRA layer: LoRA's low-rank update on the direction of W, plus a trained magnitude per row.

Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation" (arXiv:2402.09353), eq. (5):

    W' = m * (W0 + dW) / ||W0 + dW||,    dW = s (B A - B0 A0),   m: (out,), init ||W0||

with the norm taken over each output row (dim 1 of the (out, in) weight, as peft; the paper's
"column-wise" norm of its (in, out) matrix). `dW` is LoRA's update (`LoRALinear.delta_weight`):
with the default init B = 0 and there is no B0 A0; PiSSA / OLoRA keep their starting product
aside, so dW = 0 at step 0 either way and m = ||W0|| makes the adapted layer equal the base.
Section 4.3: the norm is treated as a constant in backward (detached), which saves the memory
of its graph; A, B get gradients through the update, m through its scale.

The forward never builds W' (out x in, with a gradient). With n = ||W0 + dW|| (no grad):

    h = W' x + b = W0 x + b  +  (m/n - 1) * W0 x  +  (m/n) * s (B A - B0 A0) x

so the base layer's own output is reused and only the low-rank path is new (peft's form). The
bias is added once, unscaled. W0 comes from `base_weight()` (a quantised base dequantises
there), so QLoRA's layer can reuse DoRA on top.

Dropout, as peft: in training with dropout > 0 both new terms see the same dropped input,

    h = W0 x + b + (m/n - 1) * W0 drop(x) + (m/n) * s (B A - B0 A0) drop(x)

(an extra matmul with W0, since W0 drop(x) is not the base output); in eval or without
dropout drop(x) = x and W0 x is the base output minus its bias.

Merge writes W' into the base weight and keeps m/n per row to invert it: unmerge computes
W0 = W' / (m/n) - dW (exact up to rounding; a zero magnitude cannot be undone).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.lora.layer import LoRALinear


class DoRALinear(LoRALinear):
    """LoRALinear's factors (A, B, start product, scaling) plus `lora_magnitude_vector` (out,),
    named as peft names it so saved folders map key for key."""

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False,
                 init: str = "default", dtype: torch.dtype | None = None):
        super().__init__(base_layer, r, alpha, dropout=dropout, rslora=rslora, init=init, dtype=dtype)
        # m = ||W0 + dW|| = ||W0|| at init (dW = 0): the adapted layer starts as the base
        self.lora_magnitude_vector = nn.Parameter(self.weight_norm().to(self.lora_A.weight.dtype))
        self.register_buffer("merge_scale", None, persistent=False)  # m/n at merge time, (out,)

    @torch.no_grad()
    def weight_norm(self, w0: torch.Tensor | None = None) -> torch.Tensor:
        """n = ||W0 + s (B A - B0 A0)|| per output row, fp32, (out,); never carries a gradient
        (paper §4.3). `w0`: the base weight when the caller already has it."""
        w0 = self.base_weight() if w0 is None else w0
        return torch.linalg.norm(w0.float() + self.delta_weight(), dim=1)

    def scaled_low_rank(self, x: torch.Tensor) -> torch.Tensor:
        """s (B A - B0 A0) x for an input already dropped out (LoRALinear.lora_update drops itself)."""
        update = self.lora_B(self.lora_A(x))  # (..., out)
        if self.has_start_product:
            update = update - (x @ self.lora_A0.t()) @ self.lora_B0.t()
        return self.scaling * update

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W0 x + b + (m/n - 1) W0 drop(x) + (m/n) s (B A - B0 A0) drop(x) (module docstring)."""
        h = self.base_layer(x)  # (..., out) = W0 x + b
        if self.merged:  # the base weight already is W'
            return h
        dtype = self.lora_A.weight.dtype
        w0 = self.base_weight()  # (out, in)
        scale = self.lora_magnitude_vector / self.weight_norm(w0).to(dtype)  # (out,), grad through m only
        if self.training and not isinstance(self.dropout, nn.Identity):
            x = self.dropout(x.to(dtype))
            base_part = F.linear(x, w0.to(dtype))  # W0 drop(x): the base output saw the whole x
        else:
            x = x.to(dtype)
            bias = self.base_layer.bias
            base_part = (h if bias is None else h - bias).to(dtype)  # W0 x
        dora = (scale - 1) * base_part + scale * self.scaled_low_rank(x)
        return h + dora.to(h.dtype)

    @torch.no_grad()
    def merged_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W' = m/n * (W0 + dW) in fp32, the row scale m/n) from the unmerged base weight."""
        v = self.base_weight().float() + self.delta_weight()  # (out, in)
        scale = self.lora_magnitude_vector.float() / torch.linalg.norm(v, dim=1)
        return scale[:, None] * v, scale

    @torch.no_grad()
    def merge(self) -> None:
        """W0 <- W' (inference without the extra path; do not train while merged)."""
        if not self.merged:
            weight, self.merge_scale = self.merged_weight()
            w = self.base_layer.weight
            w.copy_(weight.to(w.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 <- W' / (m/n) - dW, with m/n kept from the merge (n came from the unmerged W0)."""
        if self.merged:
            if bool((self.merge_scale == 0).any()):
                raise DeltatuneError("DoRA cannot unmerge a row whose magnitude m is 0: reload the base instead")
            w = self.base_layer.weight
            w.copy_((w.float() / self.merge_scale[:, None] - self.delta_weight()).to(w.dtype))
            self.merge_scale = None
            self.merged = False
