"""The `method:` section for Intrinsic SAID (`name: said`).

    method: {name: said, d: 2000, seed: 0}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SAIDConfig(BaseModel):
    """Intrinsic SAID hyper-parameters (Aghajanyan, Zettlemoyer & Gupta 2021, arXiv:2012.13255).

    d:       the intrinsic dimension: the number of trainable numbers in all. As in the paper,
             m of them are the per-tensor scalars lambda (one per target weight tensor) and
             d - m drive the random projection, so d must exceed the number of targets and
             may not exceed their parameter count. The paper measures d90 (the d reaching 90%
             of full fine-tuning) in the hundreds to thousands for 100M+ models.
    targets: which Linear weights take part (names, `re:REGEX`, `all-linear`: every Linear but
             the LM head).
    seed:    draws the Fastfood projection; saved in the config, so the projection is
             regenerated bit for bit and never stored.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["said"] = "said"
    d: int = Field(2000, ge=2)
    targets: str | list[str] = "all-linear"
    seed: int = 0

    @field_validator("targets")
    @classmethod
    def _targets_non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("targets must be a module name (suffix match), 're:REGEX', 'all-linear', "
                             "or a non-empty list of them")
        return value
