"""LoRA <-> HF PEFT file layout: `adapter_config.json` fields and `target_modules`.

Tensor keys are `base_model.model.<module>.lora_A.weight` (`deltatune.methods.peft_layout`); this
file only translates the config. Our LoRA is PEFT's plain LoRA (no DoRA, no per-layer rank or alpha
patterns, no bias training); a PEFT folder using those features is refused, not half-loaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.lora.config import LoraConfig
from deltatune.methods.peft_layout import peft_target_modules, peft_targets_to_ours


def peft_adapter_config(model: nn.Module, cfg: LoraConfig, installed, base_model_path: str) -> dict[str, Any]:
    """The `adapter_config.json` PEFT's `PeftModel.from_pretrained` reads, for LoRA installed
    on `model` (`installed.wrappers` names the wrapped modules)."""
    target_modules = peft_target_modules(model, list(installed.wrappers))
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_path,
        "revision": None,
        "inference_mode": True,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "use_rslora": cfg.rslora,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": False,
    }


_UNSUPPORTED = {  # key -> the value plain LoRA has; anything else we cannot reproduce
    "use_dora": False,
    "bias": "none",
    "fan_in_fan_out": False,
    "modules_to_save": None,
    "rank_pattern": {},
    "alpha_pattern": {},
    "layers_to_transform": None,
    "lora_bias": False,
    "layer_replication": None,
    "trainable_token_indices": None,
    "target_parameters": None,
}


def config_from_peft(raw: dict[str, Any], where: str) -> LoraConfig:
    """A PEFT `adapter_config.json` dict -> our LoraConfig; refuses features we lack."""
    if raw.get("peft_type") != "LORA":
        raise DeltatuneError(f"{where}: peft_type {raw.get('peft_type')!r} is not supported (only LORA)")
    for key, plain in _UNSUPPORTED.items():
        if raw.get(key) not in (plain, None, {}, []):
            raise DeltatuneError(f"{where}: {key}={raw[key]!r} is not supported by deltatune's LoRA")
    targets = peft_targets_to_ours(raw.get("target_modules"))
    try:
        return LoraConfig(
            r=raw["r"],
            alpha=raw.get("lora_alpha", 8),
            dropout=raw.get("lora_dropout", 0.0),
            rslora=bool(raw.get("use_rslora", False)),
            targets=targets,
        )
    except (KeyError, ValueError) as err:
        raise DeltatuneError(f"{where}: not a usable LoRA config: {err}") from None
