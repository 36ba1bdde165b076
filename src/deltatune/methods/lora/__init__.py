"""LoRA (Hu et al. 2021): low-rank updates on chosen Linear layers. Config, layer, PEFT format.

    from deltatune.methods.lora import LoraConfig, apply_lora
    apply_lora(model, LoraConfig(r=8, alpha=16, targets=["q_proj", "v_proj"]))
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.lora.config import LoraConfig
from deltatune.methods.lora.layer import LoRALinear
from deltatune.methods.modules import match_linear_targets, swap_module

__all__ = ["LoraConfig", "LoRALinear", "apply_lora", "lora_targets", "wrap_lora"]


def lora_targets(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Full names of the Linear modules `cfg.targets` selects (error if a pattern matches none)."""
    return match_linear_targets(model, cfg.targets, key="method.targets")


def wrap_lora(module: nn.Module, cfg: LoraConfig, name: str = "") -> LoRALinear:
    """A LoRA wrapper around `module` (not yet swapped into the model)."""
    if type(module) is not nn.Linear:
        raise DeltatuneError(f"LoRA supports nn.Linear only; {name or 'module'} is {type(module).__name__}")
    return LoRALinear(module, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, rslora=cfg.rslora)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> None:
    """Swap a fresh LoRALinear in for every target (new A/B require grad; bases untouched)."""
    for name in lora_targets(model, cfg):
        swap_module(model, name, wrap_lora(model.get_submodule(name), cfg, name))
