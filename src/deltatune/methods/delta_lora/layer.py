"""The Delta-LoRA layer: LoRA's layer whose base weight also learns, from the change of B A.

Zi et al. 2023, "Delta-LoRA: Fine-Tuning High-Rank Parameters with the Delta of Low-Rank
Matrices" (arXiv:2309.02411). The forward is LoRA's, without dropout:

    h = W x + s B A x,            A: (r, in), B: (out, r), s = alpha / r (alpha / sqrt(r): rsLoRA)

and after optimiser step t (past the warm-up of K steps, see the hook in `__init__.py`):

    W_t = W_{t-1} + λ s (B_t A_t - B_{t-1} A_{t-1})

Why W needs no gradient of its own: with no dropout both paths see the same x, so ∂L/∂W equals
∂L/∂(s B A), and the change the optimiser just gave s B A stands in for a step on W; W gets no
gradient and no AdamW moments, so memory stays LoRA's (plus the targets' weights in fp32).
The updates telescope: from step K on, W_t = W_K + λ s (B_t A_t - B_K A_K), so the layer
computes W_K + (1 + λ) s B_t A_t - λ s B_K A_K — what changes against LoRA is that the function
moves (1 + λ) times as far as the s-scaled gradients of A and B ask for (and the update's rank
stays <= 2r, in exact arithmetic).

The scaling s: the paper's Algorithm 1 writes the update as W + λ · (α / r) · Δ(AB) — s is in
it. We keep it (and use the layer's own s, so rsLoRA's α / sqrt(r) too): s B A is what the
forward adds, so λ = 1 moves W by exactly the change the adapter just made to the layer's
function, and λ keeps one meaning at any alpha or r.

The buffers `lora_A_prev`, `lora_B_prev` (fp32) hold A, B as of the last step boundary. After
every step they equal A, B again, so they are redundant at a checkpoint; they are persistent
anyway, so the state alone says exactly what the next update subtracts (a saved state whose
A, B were edited by hand still resumes as saved).
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.methods.lora.layer import LoRALinear


class DeltaLoRALinear(LoRALinear):
    """LoRALinear (no dropout) + the base-weight update `fold_step`; wraps, does not copy, the base."""

    def __init__(self, base_layer: nn.Linear, r: int, alpha: float, rslora: bool = False, init: str = "default"):
        super().__init__(base_layer, r, alpha, dropout=0.0, rslora=rslora, init=init)
        self.register_buffer("lora_A_prev", self.lora_A.weight.detach().float().clone())  # (r, in)
        self.register_buffer("lora_B_prev", self.lora_B.weight.detach().float().clone())  # (out, r)

    @torch.no_grad()
    def fold_step(self, ratio: float) -> None:
        """W += ratio * s (B A - B_prev A_prev), then B_prev, A_prev = B, A (ratio 0: warm-up,
        only remember). Called once after every optimiser step."""
        a, b = self.lora_A.weight.float(), self.lora_B.weight.float()
        if ratio:
            w = self.base_layer.weight  # (out, in), fp32 when the method trains base weights
            change = b @ a - self.lora_B_prev @ self.lora_A_prev  # (out, in)
            w.add_((ratio * self.scaling * change).to(w.dtype))
        self.lora_A_prev.copy_(a)
        self.lora_B_prev.copy_(b)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", delta-lora"
