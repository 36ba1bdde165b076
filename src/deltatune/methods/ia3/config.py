"""The `method:` section for IA3 (`name: ia3`).

    method: {name: ia3, targets: [k_proj, v_proj, down_proj], feedforward: [down_proj]}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

_PATTERNS = "a module name (suffix match), 're:REGEX'"


def _check_patterns(items: list, what: str, allow_empty: bool) -> None:
    """Every entry a non-empty string (and at least one unless `allow_empty`)."""
    if (not items and not allow_empty) or any(not isinstance(t, str) or not t.strip() for t in items):
        raise ValueError(what)


class IA3Config(BaseModel):
    """IA3 hyper-parameters (Liu et al. 2022): which Linears get a learned rescaling vector.

    targets:     the Linear modules to adapt: a name (suffix match), `re:REGEX`, `all-linear`,
                 or a list of names / regexes (see `deltatune.methods.modules`). Default: peft's
                 Llama default, the attention keys and values and the FFN's output projection.
    feedforward: which of the targeted modules rescale their *input* (the FFN's intermediate
                 activation, l_ff in the paper) instead of their output; names or `re:REGEX`
                 matched among the targets only, so each entry must select a targeted module.
                 A single name is accepted for a one-entry list; [] rescales every output.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["ia3"] = "ia3"
    targets: str | list[str] = ["k_proj", "v_proj", "down_proj"]
    feedforward: list[str] = ["down_proj"]

    @field_validator("targets")
    @classmethod
    def _targets_non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        _check_patterns(items, f"targets must be {_PATTERNS}, 'all-linear', or a non-empty list of them",
                        allow_empty=False)
        return value

    @field_validator("feedforward", mode="before")
    @classmethod
    def _feedforward_names(cls, value):
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list):
            _check_patterns(items, f"feedforward entries must each be {_PATTERNS}", allow_empty=True)
        return items
