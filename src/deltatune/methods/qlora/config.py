"""The `method:` section for QLoRA (`name: qlora`): LoRA's keys plus how the base is stored.

    method: {name: qlora, r: 16, alpha: 32, dropout: 0.05, targets: all-linear, bits: 4}

Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv:2305.14314): the
frozen base's Linear weights are stored in 4-bit NormalFloat (NF4) with double quantisation
(the per-block scales quantised again), and LoRA trains on top in the compute dtype. The
paper's recipe is LoRA's (same r, alpha, lr, all linear layers), so the defaults are LoRA's.

bits:  4 -> NF4 + double quantisation (bitsandbytes Linear4bit, the paper's setting);
       8 -> LLM.int8() row-wise int8 (bitsandbytes Linear8bitLt; Dettmers et al. 2022); its
            matmul also quantises the activations, so an 8-bit run cannot be merged.
dora:  DoRA (Liu et al. 2024, arXiv:2402.09353) on the quantised base ("QDoRA"): a trained
       magnitude per output row times the direction of dequant(W0) + s B A.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from deltatune.methods.lora.config import LoraFamilyConfig

ALLOWED_BITS = (4, 8)


class QloraConfig(LoraFamilyConfig):
    """QLoRA hyper-parameters: the LoRA family's keys, the base's storage width, DoRA on top."""

    name: Literal["qlora"] = "qlora"
    bits: int = 4
    dora: bool = False

    @field_validator("bits", mode="before")
    @classmethod
    def _allowed_bits(cls, value):
        if isinstance(value, bool) or value not in ALLOWED_BITS:
            raise ValueError(f"method.bits must be one of {', '.join(map(str, ALLOWED_BITS))} "
                             f"(4: NF4 with double quantisation, the QLoRA paper's; 8: LLM.int8())")
        return int(value)
