"""The `method:` section for LoRA (`name: lora`) and the keys every LoRA-family method shares.

    method: {name: lora, r: 16, alpha: 32, dropout: 0.05, targets: all-linear, rslora: false,
             init: default}

`LoraFamilyConfig` holds the keys of the low-rank update B·A (rank, scale, dropout, targets,
initialisation); each family member (`lora`, `dora`, `lora_fa`, `delta_lora`, `qlora`)
subclasses it with its own `name` and keys.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# How A and B start (deltatune.methods.lora.init):
#   default   A Kaiming-uniform, B = 0 (Hu et al. 2021; the update starts at zero)
#   gaussian  A ~ N(0, 1/r^2), B = 0 (peft's `init_lora_weights="gaussian"`)
#   pissa     A, B from the top-r singular triplets of W0 (Meng et al. 2024)
#   olora     A, B from a QR decomposition of W0 (Büyükakyüz 2024)
# pissa / olora start B·A != 0: the layer subtracts that starting product (a frozen copy) so the
# adapted model equals the base at step 0 and the base weights are never written.
LoraInit = Literal["default", "gaussian", "pissa", "olora"]


class LoraFamilyConfig(BaseModel):
    """Keys of the low-rank update shared by the LoRA family. `targets`: a name (suffix match),
    `re:REGEX`, `all-linear`, or a list of names / regexes (see `deltatune.methods.modules`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    has_lora_b: ClassVar[bool] = True  # train.lr_ratio_b (LoRA+) applies: see lora.plus

    r: int = Field(8, gt=0)  # rank of the update B @ A
    alpha: float = Field(16.0, gt=0)  # scale numerator: alpha / r (or alpha / sqrt(r) with rslora)
    dropout: float = Field(0.0, ge=0, lt=1)  # on the LoRA branch's input only
    targets: str | list[str] = "all-linear"
    rslora: bool = False  # rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023)
    init: LoraInit = "default"

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items or any(not isinstance(t, str) or not t.strip() for t in items):
            raise ValueError("targets must be a non-empty module name, 're:REGEX', 'all-linear', or a list of them")
        return value


class LoraConfig(LoraFamilyConfig):
    """LoRA hyper-parameters (`name: lora`): the family's keys, nothing more."""

    name: Literal["lora"] = "lora"
