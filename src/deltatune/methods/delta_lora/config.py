"""The `method:` section for Delta-LoRA (`name: delta_lora`): LoRA's keys plus the update ratio
and the warm-up of the base-weight update.

    method: {name: delta_lora, r: 16, alpha: 32, targets: all-linear, delta_lambda: 2.0, delta_warmup: 500}

Defaults are the paper's (Zi et al. 2023, arXiv:2309.02411, its experiments: "update ratio
λ = 2", "start steps K = 500"). K counts optimiser steps, so on a short run (a few hundred steps, as
the built-in data sets train for) K = 500 means the base weights never move and the run is
plain LoRA: scale K to the run's budget (configs/smollm2/sft_delta_lora.yaml uses 10).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from deltatune.methods.lora.config import LoraFamilyConfig


class DeltaLoraConfig(LoraFamilyConfig):
    """Delta-LoRA hyper-parameters (`name: delta_lora`): the LoRA family's keys and

    delta_lambda (λ): the base weight moves by λ times the change of s·B·A each step
    delta_warmup (K): optimiser steps 1..K train only A and B; the base moves from step K+1
    dropout:          must stay 0 — the paper removes it (see `_no_dropout`)
    """

    name: Literal["delta_lora"] = "delta_lora"
    delta_lambda: float = Field(2.0, gt=0)
    delta_warmup: int = Field(500, ge=0)

    @field_validator("dropout")
    @classmethod
    def _no_dropout(cls, value: float) -> float:
        """Delta-LoRA's argument that Δ(B A) stands in for W's own gradient step needs the LoRA
        branch to see the same input as W (∂L/∂W = ∂L/∂(BA) only without dropout): the paper
        drops it, so a dropout here would silently change the method."""
        if value > 0:
            raise ValueError("Delta-LoRA trains without dropout on the LoRA branch (the base-weight update "
                             "assumes the branch sees the same input as W; Zi et al. 2023 remove it): "
                             "set method.dropout to 0 or use method.name=lora")
        return value
