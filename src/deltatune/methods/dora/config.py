"""The `method:` section for DoRA (`name: dora`): the LoRA family's keys, nothing more.

    method: {name: dora, r: 16, alpha: 32, dropout: 0.05, targets: all-linear, init: default}

DoRA adds one trainable magnitude per output row of each target; it has no key of its own
(peft's `use_dora: true` is this method's peft twin, not a key here).
"""

from __future__ import annotations

from typing import Literal

from deltatune.methods.lora.config import LoraFamilyConfig


class DoraConfig(LoraFamilyConfig):
    """DoRA hyper-parameters (`name: dora`): rank, scale, dropout, targets and init of the
    direction update B·A, as for LoRA (`deltatune.methods.lora.config`)."""

    name: Literal["dora"] = "dora"
