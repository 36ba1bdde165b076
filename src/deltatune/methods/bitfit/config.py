"""The `method:` section for BitFit (`name: bitfit`).

    method: {name: bitfit}                                   # every Linear but the LM head
    method: {name: bitfit, targets: [q_proj, k_proj, v_proj, o_proj]}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator


class BitFitConfig(BaseModel):
    """BitFit (Ben Zaken et al. 2022): only bias terms train.

    targets: the Linear modules whose bias trains: a name (suffix match), `re:REGEX`,
             `all-linear` (default: every Linear except the output head), or a list of names /
             regexes (see `deltatune.methods.modules`). A targeted Linear without a bias (all of
             Llama's) gets a zero-initialised one, so the model is unchanged at step 0.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["bitfit"] = "bitfit"
    targets: str | list[str] = "all-linear"

    @field_validator("targets")
    @classmethod
    def _targets_non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("targets must be a module name (suffix match), 're:REGEX', 'all-linear', "
                             "or a non-empty list of them")
        return value
