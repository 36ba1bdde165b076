"""DoRA <-> HF PEFT file layout: peft's LoRA config with `use_dora: true`.

peft has DoRA as a flag of its LoRA (`peft_type: "LORA"`, `use_dora: true`). Its folders store
the magnitude of each adapted module under `base_model.model.<module>.lora_magnitude_vector`
(no `.weight`, no adapter name: peft's LoraModel strips them when saving and adds them back
when loading), which is our parameter's own name with peft's prefix, so the tensor keys are
`deltatune.methods.peft_layout`'s. Everything else is LoRA's translation
(`deltatune.methods.lora.peft_format`), whose refusals (rank patterns, bias training, ...) apply.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.dora.config import DoraConfig
from deltatune.methods.lora import peft_format as lora_format


def peft_adapter_config(model: nn.Module, cfg: DoraConfig, installed, base_model_path: str) -> dict[str, Any]:
    """LoRA's `adapter_config.json` for the same modules, with `use_dora: true`."""
    return {**lora_format.peft_adapter_config(model, cfg, installed, base_model_path), "use_dora": True}


def config_from_peft(raw: dict[str, Any], where: str) -> DoraConfig:
    """A peft `adapter_config.json` dict with `use_dora: true` -> our DoraConfig."""
    if not raw.get("use_dora"):
        raise DeltatuneError(f"{where}: use_dora is not true: this is a plain LoRA adapter (method.name: lora)")
    lora = lora_format.config_from_peft({**raw, "use_dora": False}, where)
    return DoraConfig(**lora.model_dump(exclude={"name"}))


def is_dora(raw: dict[str, Any]) -> bool:
    """A plain peft LORA folder is DoRA's when its config says `use_dora: true`."""
    return bool(raw.get("use_dora"))
