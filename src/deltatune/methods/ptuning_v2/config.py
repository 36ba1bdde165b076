"""The `method:` section for P-tuning v2 (`name: ptuning_v2`).

    method: {name: ptuning_v2, num_virtual_tokens: 20}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PTuningV2Config(BaseModel):
    """P-tuning v2 hyper-parameters (Liu et al. 2022): deep prompts, trained directly.

    num_virtual_tokens: P trained key/value pairs in front of every attention layer's own (the
      paper: ~20 for simple classification, up to 100+ for hard sequence tasks). No
      reparameterisation: the paper found its benefit task-dependent and trains the prompts
      themselves (`name: prefix` has the MLP).
    init_text: start the prompts as the keys and values the base model computes for this text
      (repeated to fill P tokens); None: N(0, 1), as peft (see `name: prefix`'s init_text).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["ptuning_v2"] = "ptuning_v2"
    num_virtual_tokens: int = Field(20, ge=1, le=4096)
    init_text: str | None = Field(None, min_length=1)
