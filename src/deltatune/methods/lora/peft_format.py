"""LoRA <-> HF PEFT file layout: `adapter_config.json` fields and `target_modules`.

Tensor keys are `base_model.model.<module>.lora_A.weight` (`deltatune.methods.peft_layout`); this
file only translates the config. Our LoRA is PEFT's plain LoRA (no DoRA, no per-layer rank or alpha
patterns, no bias training); a PEFT folder using those features is refused, not half-loaded.
So is a folder peft saved straight after training with a base-rewriting init (PiSSA, OLoRA,
CorDA, LoftQ, LoRA-GA: peft wrote W0 - s B0 A0 into the base): its A and B apply only to that
residual base. Our own PiSSA / OLoRA adapters are written already converted (lora.convert).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.lora.config import LoraConfig, LoraFamilyConfig
from deltatune.methods.lora.init import STARTS_AT_ZERO
from deltatune.methods.peft_layout import peft_target_modules, peft_targets_to_ours


def peft_adapter_config(model: nn.Module, cfg: LoraFamilyConfig, installed, base_model_path: str) -> dict[str, Any]:
    """The `adapter_config.json` PEFT's `PeftModel.from_pretrained` reads, for LoRA installed
    on `model` (`installed.wrappers` names the wrapped modules). `cfg` is a plain LoRA's: the
    start-product inits are converted before saving (lora.convert), so peft reads the default."""
    if cfg.init not in STARTS_AT_ZERO:  # a programming error: save_adapter converts first
        raise ValueError(f"method.init={cfg.init} must be converted to a plain LoRA (lora.convert) before peft export")
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


# peft inits that rewrite the base weight to the residual W0 - s B0 A0 (prefixes: "pissa_niter_4")
_RESIDUAL_BASE_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


def config_from_peft(raw: dict[str, Any], where: str,
                     config_cls: type[LoraFamilyConfig] = LoraConfig) -> LoraFamilyConfig:
    """A PEFT `adapter_config.json` dict -> our `config_cls` (LoraConfig unless a family member
    reads it); refuses features we lack."""
    if raw.get("peft_type") != "LORA":
        raise DeltatuneError(f"{where}: peft_type {raw.get('peft_type')!r} is not supported (only LORA)")
    for key, plain in _UNSUPPORTED.items():
        if raw.get(key) not in (plain, None, {}, []):
            raise DeltatuneError(f"{where}: {key}={raw[key]!r} is not supported by deltatune's LoRA")
    init = raw.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_RESIDUAL_BASE_INITS):
        raise DeltatuneError(
            f"{where}: init_lora_weights={init!r}: peft saved this adapter unconverted, so it only applies to "
            f"the residual base peft rewrote (W0 - s B0 A0), not to the original model. Re-save it in peft with "
            f"save_pretrained(..., path_initial_model_for_weight_conversion=...) to get a plain LoRA of the "
            f"original base, or train it with deltatune (method.init: {init.split('_')[0].lower()})")
    targets = peft_targets_to_ours(raw.get("target_modules"))
    try:
        return config_cls(
            r=raw["r"],
            alpha=raw.get("lora_alpha", 8),
            dropout=raw.get("lora_dropout", 0.0),
            rslora=bool(raw.get("use_rslora", False)),
            targets=targets,
        )
    except (KeyError, ValueError) as err:
        raise DeltatuneError(f"{where}: not a usable LoRA config: {err}") from None
