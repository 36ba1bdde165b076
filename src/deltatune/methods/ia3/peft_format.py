"""IA3 <-> HF PEFT file layout: `adapter_config.json` fields, `target_modules` and
`feedforward_modules`.

Tensor keys are `base_model.model.<module>.ia3_l` (`deltatune.methods.peft_layout`); this file
only translates the config. Our IA3 is peft's IA3 on plain Linears (no Conv1D fan-in-fan-out
weights, no extra trained modules, no exclusions); a PEFT folder using those is refused, not
half-loaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.ia3.config import IA3Config
from deltatune.methods.peft_layout import peft_target_modules, peft_targets_to_ours


def peft_module_lists(model: nn.Module, installed) -> tuple[list[str], list[str]]:
    """(`target_modules`, `feedforward_modules`) selecting exactly the wrapped modules and their
    feedforward subset. peft insists the second is a subset of the first, so when the shortest
    forms are not, both are written as full module names."""
    targets = list(installed.wrappers)
    feedforward = [name for name, w in installed.wrappers.items() if w.feedforward]
    target_modules = peft_target_modules(model, targets)
    feedforward_modules = peft_target_modules(model, feedforward) if feedforward else []
    if not set(feedforward_modules) <= set(target_modules):
        return sorted(targets), sorted(feedforward)
    return target_modules, feedforward_modules


def peft_adapter_config(model: nn.Module, cfg: IA3Config, installed, base_model_path: str) -> dict[str, Any]:
    """The `adapter_config.json` PEFT's `PeftModel.from_pretrained` reads, for IA3 installed on
    `model` (`installed.wrappers` names the wrapped modules)."""
    target_modules, feedforward_modules = peft_module_lists(model, installed)
    return {
        "peft_type": "IA3",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_path,
        "revision": None,
        "inference_mode": True,
        "target_modules": target_modules,
        "exclude_modules": None,
        "feedforward_modules": feedforward_modules,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_ia3_weights": True,
    }


_UNSUPPORTED = {  # key -> the value plain IA3 has; anything else we cannot reproduce
    "fan_in_fan_out": False,
    "modules_to_save": None,
    "exclude_modules": None,
}


def _feedforward_from_peft(raw: dict[str, Any], where: str) -> list[str]:
    """peft's `feedforward_modules` (a list of suffixes, or one regex string) -> ours."""
    value = raw.get("feedforward_modules")
    if value is None:
        raise DeltatuneError(
            f"{where}: feedforward_modules is missing (peft would pick it by model type); "
            "write it into adapter_config.json ([] for none)"
        )
    if not value:
        return []
    ours = peft_targets_to_ours(value)
    return [ours] if isinstance(ours, str) else ours


def config_from_peft(raw: dict[str, Any], where: str) -> IA3Config:
    """A PEFT `adapter_config.json` dict -> our IA3Config; refuses features we lack."""
    if raw.get("peft_type") != "IA3":
        raise DeltatuneError(f"{where}: peft_type {raw.get('peft_type')!r} is not supported (only IA3)")
    for key, plain in _UNSUPPORTED.items():
        if raw.get(key) not in (plain, None, {}, []):
            raise DeltatuneError(f"{where}: {key}={raw[key]!r} is not supported by deltatune's IA3")
    if not raw.get("target_modules"):
        raise DeltatuneError(
            f"{where}: target_modules is missing (peft would pick it by model type); write it into "
            "adapter_config.json"
        )
    try:
        return IA3Config(targets=peft_targets_to_ours(raw["target_modules"]),
                         feedforward=_feedforward_from_peft(raw, where))
    except ValueError as err:
        raise DeltatuneError(f"{where}: not a usable IA3 config: {err}") from None
