"""The `method:` section for partial fine-tuning (`name: freeze`).

    method: {name: freeze, train_last_n_blocks: 2, train_norm: true}
    method: {name: freeze, train_modules: ["mlp", "re:.*\\.self_attn\\.o_proj"]}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FreezeConfig(BaseModel):
    """Train a chosen part of the model, freeze the rest. The selections are a union."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["freeze"] = "freeze"
    train_last_n_blocks: int | None = Field(None, ge=1)  # the top N transformer blocks
    train_modules: list[str] = []  # module names (suffix match) or 're:REGEX' over full names
    train_embeddings: bool = False  # input embeddings (and a head tied to them)
    train_norm: bool = False  # norms outside the blocks (the final norm)

    @model_validator(mode="after")
    def _selects_something(self) -> "FreezeConfig":
        if not (self.train_last_n_blocks or self.train_modules or self.train_embeddings or self.train_norm):
            raise ValueError(
                "freeze trains nothing: set train_last_n_blocks, train_modules, train_embeddings or train_norm"
            )
        return self
