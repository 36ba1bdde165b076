"""LoRA (Hu et al. 2021): low-rank updates on chosen Linear layers. Config, layer, PEFT format.

    method: {name: lora, r: 16, alpha: 32, targets: all-linear, init: default}
    from deltatune.methods.lora import METHOD          # the registry row
    installed = METHOD.install(model, LoraConfig(r=8), InstallContext())

With `init: pissa` / `olora` the layers subtract their starting product B0 A0; the finished
adapter is saved as the plain rank-2r LoRA that equals it over the original base
(`METHOD.save_as`, deltatune.methods.lora.convert), so it loads in peft and anywhere else.
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.lora import peft_format
from deltatune.methods.lora.config import LoraConfig, LoraFamilyConfig
from deltatune.methods.lora.convert import start_product_to_rank_2r
from deltatune.methods.lora.init import STARTS_AT_ZERO
from deltatune.methods.lora.layer import LoRALinear
from deltatune.methods.lora.plus import b_ratio_param_groups
from deltatune.methods.modules import match_linear_targets
from deltatune.methods.peft_layout import from_peft_key, to_peft_key
from deltatune.methods.protocol import InstallContext, Method, MethodHooks, PeftTwin

__all__ = ["METHOD", "LoraConfig", "LoRALinear", "check_rank", "install_lora", "lora_targets",
           "start_product_to_rank_2r", "wrap_lora"]


def lora_targets(model: nn.Module, cfg: LoraFamilyConfig) -> list[str]:
    """Full names of the Linear modules `cfg.targets` selects (error if a pattern matches none)."""
    return match_linear_targets(model, cfg.targets, key="method.targets")


def check_rank(model: nn.Module, names: list[str], r: int, init: str = "default", key: str = "method.r") -> None:
    """The rank (config key `key`) must fit every target: B A has rank <= min(in, out) of the
    layer. An init with a start product (pissa, olora) is saved as a rank-2r LoRA
    (lora.convert), so 2r must fit."""
    saved = r if init in STARTS_AT_ZERO else 2 * r
    for name in names:
        module = model.get_submodule(name)
        smaller = min(module.in_features, module.out_features)
        if saved <= smaller:
            continue
        where = f"{name}'s smaller dimension ({module.in_features} in, {module.out_features} out)"
        if saved == r:
            raise DeltatuneError(
                f"{key}={r} is larger than {where}: use {key} <= {smaller} or leave that layer out of method.targets")
        raise DeltatuneError(
            f"{key}={r} with method.init={init}: the finished adapter is saved as a plain LoRA of rank "
            f"2r={saved} (the update B A - B0 A0), larger than {where}: use {key} <= {smaller // 2}, "
            f"leave that layer out of method.targets, or use method.init=default")


def wrap_lora(module: nn.Module, cfg: LoraFamilyConfig, name: str = "") -> LoRALinear:
    """A LoRA wrapper around `module` (not yet swapped into the model)."""
    if type(module) is not nn.Linear:
        raise DeltatuneError(f"LoRA supports nn.Linear only; {name or 'module'} is {type(module).__name__}")
    return LoRALinear(module, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, rslora=cfg.rslora, init=cfg.init)


def install_lora(model: nn.Module, cfg: LoraFamilyConfig, ctx: InstallContext) -> WrapperInstall:
    """A fresh LoRALinear around every target (new A/B require grad; the bases untouched);
    the LoRA+ param groups hook (train.lr_ratio_b)."""
    names = lora_targets(model, cfg)  # raises on a bad target before anything changes
    check_rank(model, names, cfg.r, cfg.init)
    wrappers = {name: wrap_lora(model.get_submodule(name), cfg, name) for name in names}
    return WrapperInstall(model, wrappers, MethodHooks(param_groups=b_ratio_param_groups(wrappers)))


METHOD = Method(
    name="lora",
    capacity_hint="a larger rank (method.r) or more target modules (method.targets)",
    config_cls=LoraConfig,
    install=install_lora,
    peft=PeftTwin("LORA", peft_format.peft_adapter_config, peft_format.config_from_peft, to_peft_key, from_peft_key,
                  accepts=lambda raw: not raw.get("use_dora")),
    save_as=start_product_to_rank_2r,  # pissa / olora -> the plain rank-2r LoRA over the original base
    summary="low-rank update B·A beside chosen Linear layers (Hu et al. 2021)",
)
