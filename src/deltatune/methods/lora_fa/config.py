"""The `method:` section for LoRA-FA (`name: lora_fa`): LoRA's keys; A stays at its random init.

    method: {name: lora_fa, r: 16, alpha: 32, targets: all-linear, init: default}
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from deltatune.methods.lora.config import LoraFamilyConfig


class LoraFaConfig(LoraFamilyConfig):
    """LoRA-FA hyper-parameters: the LoRA family's keys. `init` is default (Kaiming-uniform A)
    or gaussian: LoRA-FA freezes A at a random projection; pissa / olora would freeze it at
    W0's own directions and subtract a start product, which is not the method."""

    name: Literal["lora_fa"] = "lora_fa"

    @field_validator("init")
    @classmethod
    def _random_a(cls, value: str) -> str:
        if value not in ("default", "gaussian"):
            raise ValueError(
                f"lora_fa keeps A frozen at a random init, so init must be default or gaussian, not {value!r} "
                f"(for {value} use method.name: lora)")
        return value
