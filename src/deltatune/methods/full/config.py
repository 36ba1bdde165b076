"""The `method:` section for full fine-tuning (`name: full`).

    method: {name: full}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class FullConfig(BaseModel):
    """No knobs: every parameter trains; the optimiser settings live in `train:`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["full"] = "full"
