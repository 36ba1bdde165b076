"""`AdditiveMerge`: merge / unmerge for a wrapper whose update is an additive weight delta.

    class MyLinear(AdditiveMerge, nn.Module):     # needs self.base_layer, self.merged, delta_weight()
        def delta_weight(self): ...              # (out, in), what forward adds to W0

merge writes W0 + delta_weight() into the base weight (in fp32, then back to its dtype), so a
merged forward skips the method's own path; unmerge subtracts it again (equal to the base up to
rounding). LoRA, AdaLoRA, FISH Mask and SAID share it; methods whose merge is not additive
(DoRA's rescaled direction, IA3's scaling, a quantised base) write their own.
"""

from __future__ import annotations

import torch


class AdditiveMerge:
    """Mixin: merge() / unmerge() from `delta_weight()` (see the module docstring)."""

    @torch.no_grad()
    def _shift_base(self, sign: float) -> None:
        weight = self.base_layer.weight
        weight.copy_((weight.float() + sign * self.delta_weight().float()).to(weight.dtype))

    def merge(self) -> None:
        """W0 += delta_weight(): inference without the method's extra work (do not train merged)."""
        if not self.merged:
            self._shift_base(1.0)
            self.merged = True

    def unmerge(self) -> None:
        """W0 -= delta_weight(): back to the separate base + update (equal up to rounding)."""
        if self.merged:
            self._shift_base(-1.0)
            self.merged = False
