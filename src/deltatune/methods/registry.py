"""The one table of fine-tuning methods: `method.name` -> how to configure, apply and store it.

    from deltatune.methods.registry import METHODS
    spec = METHODS["lora"]; cfg = spec.config_cls(r=8); spec.apply(model, cfg)

Two kinds of method, which decide how `core` saves, loads, merges and hot-swaps them:
  - `wrap`:    swaps wrapper modules in around base layers (LoRA). Stored as the wrappers' own
               tensors, keyed `base_model.model.<module>.<param>` (PEFT's layout).
  - `tensors`: trains some of the base model's own parameters (full, freeze). Stored as those
               tensors under their parameter names in `model.safetensors`.
A new method adds a folder (config + layer) and one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from torch import nn

from deltatune.methods import freeze, full, lora
from deltatune.methods.lora import peft_format


@dataclass(frozen=True)
class MethodSpec:
    """How one method plugs in. `apply` mutates the model after `core` froze every parameter;
    `select` names what the method touches (modules to wrap for `wrap`, parameters to train
    for `tensors`); `wrap(module, cfg, name)` builds one wrapper without installing it."""

    name: str
    config_cls: type[BaseModel]
    apply: Callable[[nn.Module, Any], None]
    kind: Literal["wrap", "tensors"]
    select: Callable[[nn.Module, Any], list[str]]
    wrap: Callable[..., nn.Module] | None = None
    mergeable: bool = True
    # PEFT interop (wrap methods with a PEFT twin): peft_type, cfg+targets -> adapter_config, and back.
    peft_type: str | None = None
    to_peft: Callable[..., dict] | None = None
    from_peft: Callable[[dict, str], Any] | None = None


METHODS: dict[str, MethodSpec] = {
    "full": MethodSpec("full", full.FullConfig, full.apply_full, kind="tensors", select=full.full_parameters),
    "freeze": MethodSpec(
        "freeze", freeze.FreezeConfig, freeze.apply_freeze, kind="tensors", select=freeze.freeze_parameters
    ),
    "lora": MethodSpec(
        "lora",
        lora.LoraConfig,
        lora.apply_lora,
        kind="wrap",
        select=lora.lora_targets,
        wrap=lora.wrap_lora,
        peft_type="LORA",
        to_peft=peft_format.peft_adapter_config,
        from_peft=peft_format.config_from_peft,
    ),
}


def method_spec(cfg: BaseModel | dict) -> MethodSpec:
    """The spec for a method config (or its dict dump)."""
    from deltatune.errors import DeltatuneError

    name = cfg.get("name") if isinstance(cfg, dict) else getattr(cfg, "name", None)
    if name not in METHODS:
        raise DeltatuneError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]
