"""The IA3 layer: a frozen `nn.Linear` whose output (or, in the FFN, input) is rescaled by a
learned vector.

Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning" (arXiv:2205.05638), (IA)^3 — "Infused Adapter by Inhibiting and
Amplifying Inner Activations":

    keys / values (and other outputs):  h = l ⊙ (W0 x + b),   l: (out, 1)
    FFN output projection (feedforward): h = W0 (l ⊙ x) + b,  l: (1, in)

l starts at ones, so the adapted model equals the base at step 0. The vector is named
`ia3_l` and has peft's shapes, so saved adapters map onto peft's file layout key for key
(`base_model.model.<module>.ia3_l`). Like peft, a non-feedforward layer scales its bias too,
and `merge` folds l into W0's rows (and b) or columns, exactly what `forward` computes.
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.errors import DeltatuneError


class IA3Linear(nn.Module):
    """Wraps (does not copy) `base_layer`; the base stays frozen, only `ia3_l` trains."""

    def __init__(self, base_layer: nn.Linear, feedforward: bool):
        super().__init__()
        self.base_layer = base_layer
        self.feedforward = feedforward
        weight = base_layer.weight
        shape = (1, base_layer.in_features) if feedforward else (base_layer.out_features, 1)
        # fp32 even over a bf16 / fp16 base (master weights); fp64 stays fp64
        dtype = torch.promote_types(weight.dtype, torch.float32)
        self.ia3_l = nn.Parameter(torch.ones(shape, dtype=dtype, device=weight.device))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """feedforward: h = W0 (l ⊙ x) + b; otherwise h = l ⊙ (W0 x + b). Once merged, W0
        (and b) already hold l."""
        if self.merged:
            return self.base_layer(x)
        scale = self.ia3_l.flatten()  # l: (in,) or (out,)
        if self.feedforward:
            return self.base_layer((x.to(scale.dtype) * scale).to(x.dtype))  # (..., in) -> (..., out)
        h = self.base_layer(x)  # (..., out)
        return (h.to(scale.dtype) * scale).to(h.dtype)

    def _rescale_base(self, op) -> None:
        """W0 ← op(W0, l) (columns for feedforward, rows otherwise), b ← op(b, l) when the output
        is scaled; `op` is torch.mul (merge) or torch.div (unmerge), in l's dtype (fp32 or wider),
        cast back."""
        w, b = self.base_layer.weight, self.base_layer.bias
        scale = self.ia3_l  # (1, in) or (out, 1)
        w.copy_(op(w.to(scale.dtype), scale).to(w.dtype))  # (out, in)
        if b is not None and not self.feedforward:
            b.copy_(op(b.to(scale.dtype), scale.flatten()).to(b.dtype))  # (out,)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold l into W0 (and b): inference without the extra multiply (do not train while
        merged)."""
        if not self.merged:
            self._rescale_base(torch.mul)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Divide l back out: the separate base + vector again (equal up to rounding)."""
        if self.merged:
            if bool((self.ia3_l == 0).any()):
                raise DeltatuneError(
                    "cannot unmerge IA3: its vector has zero entries, so the merged weights lost those "
                    "rows / columns of the base; reload the base model instead"
                )
            self._rescale_base(torch.div)
            self.merged = False

    def extra_repr(self) -> str:
        return f"feedforward={self.feedforward}, merged={self.merged}"
