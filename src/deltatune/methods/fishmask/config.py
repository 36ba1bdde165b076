"""The `method:` section for FISH Mask (`name: fishmask`).

    method: {name: fishmask, keep_ratio: 0.005, num_samples: 1024}
    method: {name: fishmask, keep_ratio: 0.005, mask: random, seed: 0}   # the random-mask baseline
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FishMaskConfig(BaseModel):
    """FISH Mask hyper-parameters (Sung, Nair & Raffel 2021, arXiv:2111.09839).

    targets:     the Linear modules whose weights are candidates (names, `re:REGEX`,
                 `all-linear`: every Linear except the output head).
    keep_ratio:  the fraction of the candidates' entries that train, chosen globally (one top-k
                 over all candidate tensors together); in (0, 1]. Default 0.005: the paper's 0.5%,
                 which matched full fine-tuning on GLUE.
    num_samples: N, the training examples the Fisher is averaged over (the paper's 1024).
    mask:        `fisher`: the top-k entries of the empirical Fisher (needs the training data,
                 see `FishMaskInstall.prepare`); `random`: k entries drawn uniformly from `seed`,
                 no data needed (the random-mask baseline the paper compares against).
    seed:        the random mask's seed (unused by `fisher`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["fishmask"] = "fishmask"
    targets: str | list[str] = "all-linear"
    keep_ratio: float = Field(0.005, gt=0.0, le=1.0)
    num_samples: int = Field(1024, ge=1)
    mask: Literal["fisher", "random"] = "fisher"
    seed: int = 0

    @field_validator("targets")
    @classmethod
    def _targets_non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("targets must be a module name (suffix match), 're:REGEX', 'all-linear', "
                             "or a non-empty list of them")
        return value
