"""The `method:` section for P-tuning (`name: ptuning`).

    method: {name: ptuning, num_virtual_tokens: 20}                   # bi-LSTM + MLP encoder (the paper's)
    method: {name: ptuning, num_virtual_tokens: 20, encoder: mlp}     # peft's default encoder
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PTuningConfig(BaseModel):
    """P-tuning hyper-parameters (Liu et al. 2021).

    num_virtual_tokens: P virtual tokens put before every input.
    encoder: the prompt encoder that computes them from a trained (P, H) embedding —
      `lstm` (the paper's: a bidirectional LSTM, then Linear-ReLU-Linear on its 2 x hidden
      output), `mlp` (Linear-ReLU-Linear-ReLU-Linear, peft's default) or `none` (the (P, H)
      table itself: what an adapter folder holds, the encoder's output folded after training,
      as peft saves it).
    encoder_hidden_size: the encoder's hidden width (None: the model's hidden size, as peft).
    encoder_num_layers: the LSTM's layers (None: 2, as peft); lstm only.
    encoder_dropout: dropout between the LSTM's layers; lstm only.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: Literal["ptuning"] = "ptuning"
    num_virtual_tokens: int = Field(20, ge=1, le=4096)
    encoder: Literal["lstm", "mlp", "none"] = "lstm"
    encoder_hidden_size: int | None = Field(None, ge=1)
    encoder_num_layers: int | None = Field(None, ge=1, le=8)
    encoder_dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _options_fit_the_encoder(self) -> "PTuningConfig":
        if self.encoder != "lstm" and (self.encoder_num_layers is not None or self.encoder_dropout):
            raise ValueError(f"encoder_num_layers / encoder_dropout are the LSTM's: they need encoder: lstm "
                             f"(got encoder: {self.encoder})")
        if self.encoder == "none" and self.encoder_hidden_size is not None:
            raise ValueError("encoder_hidden_size needs an encoder (lstm or mlp), not encoder: none")
        return self
