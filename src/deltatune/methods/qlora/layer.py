"""The QLoRA layers: LoRA (or DoRA) beside a frozen quantised Linear (bitsandbytes 4 or 8 bits).

Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv:2305.14314), eq. 5:

    h = dequant(c1, c2, W0_nf4) x + s (B A - B0 A0) dropout(x),   s = alpha / r

The base is stored quantised (`deltatune.methods.qlora.quantise`) and dequantised to the compute
dtype on the fly by bitsandbytes; only A and B (fp32 master weights) train, and gradients flow
to them through the frozen quantised matmul. B0 A0 is LoRA's starting product for the inits
that start B A != 0 (PiSSA / OLoRA, computed from the *dequantised* W0: `base_weight`), so the
model equals the quantised base at step 0.

`QDoRALinear` is DoRA (Liu et al. 2024, arXiv:2402.09353) on the same base ("QDoRA"):
W' = m (W0 + dW) / ||W0 + dW|| with W0 = dequant(W0_nf4); DoRA's layer reads W0 through
`base_weight`, so only the quantised-base parts below are new.

Merging cannot write into packed 4-bit weights: `merge` keeps the folded weight W beside the
layer (a non-persistent buffer `folded_weight` in the compute dtype: dequant(W0) + s (B A - B0 A0)
for LoRA, W' for DoRA) and computes x W^T + b with it; `unmerge` drops it and the layer is back
on the quantised path, exactly (W0 was never written); `merged_linear` is the plain `nn.Linear`
(keys `weight` / `bias`) that `merge_and_unload` leaves in the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltatune.methods.dora.layer import DoRALinear
from deltatune.methods.lora.layer import LoRALinear
from deltatune.methods.qlora.quantise import compute_dtype, dequantised_weight, plain_linear


class FoldedOverQuantised:
    """The quantised-base half of a LoRA-family layer (mixed in before LoRALinear / DoRALinear):
    W0 read by dequantising, merge into a folded weight kept beside the packed one."""

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False,
                 init: str = "default"):
        super().__init__(base_layer, r=r, alpha=alpha, dropout=dropout, rslora=rslora, init=init,
                         dtype=compute_dtype(base_layer))
        self.register_buffer("folded_weight", None, persistent=False)  # (out, in) while merged

    def base_weight(self) -> torch.Tensor:
        """W0 as the base computes with it: dequantised to the compute dtype."""
        return dequantised_weight(self.base_layer)

    def folded(self) -> torch.Tensor:
        """The weight the merged layer computes with, fp32 (out, in)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The method's equation over dequant(W0); once merged, x W^T + b with the folded W."""
        if self.merged:
            w, b = self.folded_weight, self.base_layer.bias  # (out, in), (out,)
            return F.linear(x.to(w.dtype), w, None if b is None else b.to(w.dtype)).to(x.dtype)
        return super().forward(x)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold in fp32, keep W in the compute dtype; the packed base is left as it is."""
        if not self.merged:
            self.folded_weight = self.folded().to(compute_dtype(self.base_layer))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Back to the quantised base + separate update (exact: W0 was never written)."""
        if self.merged:
            self.folded_weight = None
            self.merged = False

    def merged_linear(self) -> nn.Linear:
        """The plain `nn.Linear` this layer computes while merged (merges first if needed)."""
        self.merge()
        return plain_linear(self.base_layer, self.folded_weight)


class QLoRALinear(FoldedOverQuantised, LoRALinear):
    """LoRA over a quantised (or, over a shared unquantised base, a plain) Linear `base_layer`."""

    def folded(self) -> torch.Tensor:
        """dequant(W0) + s (B A - B0 A0)."""
        return self.base_weight().float() + self.delta_weight()


class QDoRALinear(FoldedOverQuantised, DoRALinear):
    """DoRA over a quantised Linear: magnitude m times the direction of dequant(W0) + dW."""

    def folded(self) -> torch.Tensor:
        """W' = m (W0 + dW) / ||W0 + dW|| (DoRA's merged weight, from the dequantised W0)."""
        return self.merged_weight()[0]
