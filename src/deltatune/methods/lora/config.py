"""The `method:` section for LoRA (`name: lora`).

    method: {name: lora, r: 16, alpha: 32, dropout: 0.05, targets: all-linear, rslora: false}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LoraConfig(BaseModel):
    """LoRA hyper-parameters. `targets`: a name (suffix match), `re:REGEX`, `all-linear`,
    or a list of names / regexes (see `deltatune.methods.modules`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["lora"] = "lora"
    r: int = Field(8, gt=0)  # rank of the update B @ A
    alpha: float = Field(16.0, gt=0)  # scale numerator: alpha / r (or alpha / sqrt(r) with rslora)
    dropout: float = Field(0.0, ge=0, lt=1)  # on the LoRA branch's input only
    targets: str | list[str] = "all-linear"
    rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023)

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("targets must be a non-empty module name, 're:REGEX', 'all-linear', or a list of them")
        return value
