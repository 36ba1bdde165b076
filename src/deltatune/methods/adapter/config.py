"""The `method:` section for bottleneck adapters (`name: adapter`).

    method: {name: adapter, placement: houlsby, reduction_factor: 16, activation: relu}
    method: {name: adapter, placement: pfeiffer, bottleneck: 48, adapter_drop: 10}
    method: {name: adapter, placement: parallel, parallel_at: [ffn, attention], scaling: 4}

Where the modules sit per placement, and the defaults' sources, are in
`deltatune.methods.adapter` (the package docstring).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Placement = Literal["houlsby", "pfeiffer", "parallel"]
Activation = Literal["relu", "gelu", "silu", "tanh"]
ParallelSublayer = Literal["ffn", "attention"]

DEFAULT_REDUCTION_FACTOR = 16  # Pfeiffer et al. 2021 / the adapters library's Houlsby and Pfeiffer presets
PARALLEL_SCALING = 4.0  # He et al. 2022, the scaled parallel adapter's s
SEQUENTIAL_SCALING = 1.0  # Houlsby / Pfeiffer: the plain residual h + W_up f(W_down h)


class AdapterConfig(BaseModel):
    """Bottleneck adapter hyper-parameters.

    placement:        houlsby  after the attention output projection and after the FFN
                               (Houlsby et al. 2019: two adapters per block)
                      pfeiffer after the FFN only (Pfeiffer et al. 2021: one per block)
                      parallel beside the FFN (and/or attention), fed the sublayer's input,
                               output scaled and added to the sublayer's output (He et al. 2022)
    reduction_factor: bottleneck = hidden_size // reduction_factor (16 when neither size key is set)
    bottleneck:       the bottleneck width directly; set this or reduction_factor, not both
    activation:       the non-linearity f between the projections. Default relu: the choice of
                      Pfeiffer et al. and He et al. and the adapters library's Pfeiffer and
                      parallel presets (its Houlsby preset uses swish = silu)
    scaling:          s in h + s * W_up f(W_down x); default 4 for parallel (He et al.), 1 otherwise
    parallel_at:      placement parallel only: which sublayers get a parallel adapter
    init_std:         W_down ~ N(0, init_std^2) (Houlsby's near-identity start, the adapters
                      library's "bert" init); W_up and both biases start at zero, so the adapted
                      model equals the base at step 0
    adapter_drop:     AdapterDrop (Rücklé et al. 2021): no adapters in the lowest k blocks
    attention, attention_output, ffn, ffn_output:
                      the sublayer module names inside each block (Llama-style defaults; GPT-2:
                      attn, c_proj, mlp, c_proj); sequential adapters wrap `<attention>.<attention_output>`
                      and `<ffn>.<ffn_output>`, parallel ones wrap `<ffn>` / `<attention>` whole
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["adapter"] = "adapter"
    placement: Placement = "houlsby"
    reduction_factor: int | None = Field(None, gt=0)
    bottleneck: int | None = Field(None, gt=0)
    activation: Activation = "relu"
    scaling: float | None = Field(None, gt=0)
    parallel_at: list[ParallelSublayer] = Field(default_factory=lambda: ["ffn"], min_length=1)
    init_std: float = Field(1e-2, ge=0)
    adapter_drop: int = Field(0, ge=0)
    attention: str = Field("self_attn", min_length=1)
    attention_output: str = Field("o_proj", min_length=1)
    ffn: str = Field("mlp", min_length=1)
    ffn_output: str = Field("down_proj", min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> AdapterConfig:
        if self.reduction_factor is not None and self.bottleneck is not None:
            raise ValueError("set method.bottleneck or method.reduction_factor, not both "
                             "(bottleneck = hidden_size // reduction_factor)")
        if self.placement != "parallel" and self.parallel_at != ["ffn"]:
            raise ValueError(f"method.parallel_at applies to placement: parallel only (placement is "
                             f"{self.placement!r}); remove it or set method.placement: parallel")
        if len(set(self.parallel_at)) != len(self.parallel_at):
            raise ValueError(f"method.parallel_at lists a sublayer twice: {self.parallel_at}")
        return self

    @property
    def sequential(self) -> bool:
        """Adapters in series after a sublayer's output (houlsby, pfeiffer), not beside it."""
        return self.placement != "parallel"

    def effective_scaling(self) -> float:
        """s: the configured scaling, else the placement's paper value."""
        if self.scaling is not None:
            return self.scaling
        return SEQUENTIAL_SCALING if self.sequential else PARALLEL_SCALING
