"""The `method:` section for prompt tuning (`name: prompt`).

    method: {name: prompt, num_virtual_tokens: 20}                                 # sampled vocabulary
    method: {name: prompt, num_virtual_tokens: 16, init_text: "Answer questions about Veltrane Robotics."}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PromptConfig(BaseModel):
    """Prompt tuning hyper-parameters.

    num_virtual_tokens: trainable embeddings put before every input.
    init: how they start — `vocab` (default: embeddings of tokens sampled uniformly from the
      vocabulary, which Lester et al. found far better than random), `random` (normal noise at
      the scale of the model's own embeddings) or `text` (the embeddings of `init_text`'s
      tokens, repeated to fill the virtual tokens; the text may not be longer than them).
    init_text: sets `init: text` when given.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["prompt"] = "prompt"
    num_virtual_tokens: int = Field(20, ge=1, le=4096)
    init: Literal["vocab", "random", "text"] | None = None  # None: text if init_text else vocab
    init_text: str | None = None

    @model_validator(mode="after")
    def _init_matches_text(self) -> "PromptConfig":
        if self.init == "text" and not (self.init_text and self.init_text.strip()):
            raise ValueError("init: text needs a non-empty init_text")
        if self.init_text is not None and self.init not in (None, "text"):
            raise ValueError(f"init_text is only used with init: text (got init: {self.init})")
        return self

    @property
    def init_kind(self) -> str:
        return self.init or ("text" if self.init_text else "vocab")
