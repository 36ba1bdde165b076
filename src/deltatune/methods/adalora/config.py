"""The `method:` section for AdaLoRA (`name: adalora`).

    method: {name: adalora, init_r: 12, target_r: 8, tinit: 20, tfinal: 80, delta_t: 1,
             beta1: 0.85, beta2: 0.85, orth_reg_weight: 0.5, alpha: 32, targets: all-linear}

Defaults are the paper's / peft's (Zhang et al. 2023, arXiv:2303.10512): every triplet starts at
rank `init_r` and the total budget shrinks to `target_r` per layer. The schedule keys count
optimiser steps of the run (`total_step`: None = the run's own total, which the method learns
from `MethodHooks.begin`; the check that the schedule fits then happens there, before training).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AdaLoraConfig(BaseModel):
    """AdaLoRA hyper-parameters.

    init_r:          rank every target starts with (the total initial budget is init_r x targets)
    target_r:        average rank the budget shrinks to (total target_r x targets); <= init_r
    tinit:           first optimiser steps at the full budget (no pruning): warm-up of the scores
    tfinal:          last optimiser steps with the final mask kept fixed (fine-tuning the ranks)
    delta_t:         prune every delta_t steps while the budget shrinks (peft's `deltaT`)
    beta1, beta2:    EMA factors of the sensitivity and of its uncertainty
    orth_reg_weight: weight of the orthogonality regulariser on A and B
    alpha:           scale numerator: the update is scaled by alpha / init_r (peft: / (ranknum + 1e-5))
    dropout:         on the update branch's input only
    targets:         a name (suffix match), `re:REGEX`, `all-linear` (the paper adapts every
                     weight matrix), or a list of names / regexes (see `deltatune.methods.modules`)
    total_step:      the optimiser steps the schedule spans; None: the run's total (wins if set)
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["adalora"] = "adalora"
    init_r: int = Field(12, gt=0)
    target_r: int = Field(8, gt=0)
    tinit: int = Field(0, ge=0)
    tfinal: int = Field(0, ge=0)
    delta_t: int = Field(1, ge=1)
    beta1: float = Field(0.85, gt=0, lt=1)
    beta2: float = Field(0.85, gt=0, lt=1)
    orth_reg_weight: float = Field(0.5, ge=0)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str | list[str] = "all-linear"
    total_step: int | None = Field(None, gt=0)

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("targets must be a non-empty module name, 're:REGEX', 'all-linear', or a list of them")
        return value

    @model_validator(mode="after")
    def _budget_and_schedule_fit(self) -> "AdaLoraConfig":
        if self.target_r > self.init_r:
            raise ValueError(f"target_r={self.target_r} is above init_r={self.init_r}: AdaLoRA only prunes "
                             f"ranks; set method.target_r <= method.init_r")
        if self.total_step is not None:
            check_schedule(self.tinit, self.tfinal, self.total_step, "method.total_step", error=ValueError)
        return self


def check_schedule(tinit: int, tfinal: int, total: int, source: str, error: type[Exception]) -> None:
    """The budget must have steps to shrink in: tinit + tfinal < total (peft's check too)."""
    if tinit + tfinal >= total:
        raise error(
            f"method.tinit ({tinit}) + method.tfinal ({tfinal}) must be below the {total} optimiser steps "
            f"of {source}, or the rank budget never shrinks: lower method.tinit / method.tfinal, or "
            f"train for more steps")
