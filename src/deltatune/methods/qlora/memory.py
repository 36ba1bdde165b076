"""How many bytes the quantised Linear weights take, against the fp32 weights they replace.

    report = quantised_weight_bytes(model)
    # {"layers": 14, "quantised_bytes": ..., "fp32_bytes": ..., "ratio": 0.27, "by_part": {...}}

Counted for every bitsandbytes Linear in the model (inside LoRA wrappers too): the packed
weight plus its whole quantisation state. 4 bits (NF4, double quantisation): packed codes
(half a byte per weight), the 8-bit block scales c1 (one per 64 weights), the fp32 second-level
scales c2 (one per 256 blocks), the offset, and both code books (16 NF4 levels, 256 8-bit
levels: bitsandbytes keeps a copy per layer, so they are counted per layer). 8 bits: the int8
weight plus one fp32 scale per output row. Biases are not counted on either side (they stay
in the compute dtype). `fp32_bytes` = 4 * in * out per layer: what the same weights take in
fp32. The ratio is ~0.13 + (code books / fp32 bytes) for NF4: on tiny layers the 1 KiB code
book per layer shows, on real ones it vanishes.
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.methods.qlora.quantise import bits_of


def _state_tensors(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The quantisation-state tensors of one quantised layer, by part name."""
    if bits_of(layer) == 8:
        scb = layer.state.SCB if layer.state.SCB is not None else layer.weight.SCB
        return {"row_scales": scb}
    qs = layer.weight.quant_state
    parts = {"absmax": qs.absmax, "code": qs.code}
    if qs.nested:
        parts.update({"offset": qs.offset, "nested_absmax": qs.state2.absmax, "nested_code": qs.state2.code})
    return parts


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def quantised_weight_bytes(model: nn.Module) -> dict:
    """Bytes of the quantised Linear weights (packed + quantisation state) vs fp32 (see module
    docstring); `by_part` splits the quantised bytes by what holds them."""
    by_part: dict[str, int] = {"packed_weight": 0}
    fp32 = layers = 0
    for _, module in model.named_modules():
        if bits_of(module) is None:
            continue
        layers += 1
        fp32 += 4 * module.in_features * module.out_features
        by_part["packed_weight"] += _nbytes(module.weight.data)
        for part, tensor in _state_tensors(module).items():
            by_part[part] = by_part.get(part, 0) + _nbytes(tensor)
    quantised = sum(by_part.values())
    return {"layers": layers, "quantised_bytes": quantised, "fp32_bytes": fp32,
            "ratio": quantised / fp32 if fp32 else None, "by_part": by_part}
