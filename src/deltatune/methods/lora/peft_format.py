"""LoRA <-> HF PEFT file layout: `adapter_config.json` fields and `target_modules`.

Tensor keys are `base_model.model.<module>.lora_A.weight` (see `core.save_adapter`); this file
only translates the config. Our LoRA is PEFT's plain LoRA (no DoRA, no per-layer rank or alpha
patterns, no bias training); a PEFT folder using those features is refused, not half-loaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.lora.config import LoraConfig


def peft_target_modules(model: nn.Module, module_names: list[str]) -> list[str]:
    """Shortest `target_modules` list that selects exactly `module_names` under PEFT's rule
    (name == t or name ends with '.t'): the last name components when that is exact (the
    common case: `q_proj, v_proj, ...`), else the full module names."""
    chosen = set(module_names)
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in chosen})
    selected = {
        name for name, _ in model.named_modules() if any(name == s or name.endswith("." + s) for s in suffixes)
    }
    # Modules inside our own wrappers (lora_A, base_layer) carry other suffixes; ignore them.
    selected = {n for n in selected if not any(n.startswith(c + ".") for c in chosen)}
    return suffixes if selected == chosen else sorted(chosen)


def peft_adapter_config(
    model: nn.Module, cfg: LoraConfig, module_names: list[str], base_model_path: str
) -> dict[str, Any]:
    """The `adapter_config.json` PEFT's `PeftModel.from_pretrained` reads, for LoRA on
    `module_names` of `model`."""
    target_modules = peft_target_modules(model, module_names)
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
    targets = raw.get("target_modules") or "all-linear"
    if isinstance(targets, str) and targets != "all-linear":
        targets = "re:" + targets  # PEFT matches a string target with re.fullmatch
    try:
        return LoraConfig(
            r=raw["r"],
            alpha=raw.get("lora_alpha", 8),
            dropout=raw.get("lora_dropout", 0.0),
            rslora=bool(raw.get("use_rslora", False)),
            targets=targets if isinstance(targets, str) else sorted(targets),
        )
    except (KeyError, ValueError) as err:
        raise DeltatuneError(f"{where}: not a usable LoRA config: {err}") from None
