"""The `method:` section for prefix tuning (`name: prefix`).

    method: {name: prefix, num_virtual_tokens: 10}                              # MLP reparameterisation
    method: {name: prefix, num_virtual_tokens: 10, prefix_projection: false}    # the table itself
    method: {name: prefix, num_virtual_tokens: 20, init_text: "Answer questions about Veltrane Robotics."}
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PrefixConfig(BaseModel):
    """Prefix-tuning hyper-parameters (Li & Liang 2021).

    num_virtual_tokens: P, the prefix length: P trained key/value pairs in front of every
      attention layer's own (the paper's best: 10 for table-to-text, 200 for summarisation).
    prefix_projection: the paper's reparameterisation, on by default: the prefix is computed
      as MLP(E) from a (P, kv_width) embedding E (kv_width = KV heads x head dim, as peft)
      through `kv_width -> encoder_hidden_size -> layers * 2 * kv_width` with a tanh; the
      paper found training the table directly unstable. Only the MLP's output is kept after
      training: the adapter folder holds the (P, layers * 2 * kv_width) table (as peft's) and
      reads back as `prefix_projection: false`.
    encoder_hidden_size: the MLP's hidden width (None: kv_width, peft's default); only with
      prefix_projection.
    init_text: start the prefix as the keys and values the base model itself computes for this
      text (repeated to fill P tokens), as if it were written before every prompt: Li & Liang
      (Sec. 7.2) found initialising with real words' activations much better than random, and a
      random N(0, 1) prefix (None, peft's init) perturbs every layer of the model from step 0.
      With the MLP, its last bias absorbs the difference, so MLP(E) equals that table exactly.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["prefix"] = "prefix"
    num_virtual_tokens: int = Field(10, ge=1, le=4096)
    prefix_projection: bool = True
    encoder_hidden_size: int | None = Field(None, ge=1)
    init_text: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _hidden_needs_projection(self) -> "PrefixConfig":
        if self.encoder_hidden_size is not None and not self.prefix_projection:
            raise ValueError("encoder_hidden_size is the MLP's width: it needs prefix_projection: true")
        return self
