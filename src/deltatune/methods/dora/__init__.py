"""DoRA (Liu et al. 2024): LoRA on the direction of each weight plus a trained magnitude per
output row. Config, layer, PEFT format (peft's LoRA with `use_dora: true`).

    method: {name: dora, r: 16, alpha: 32, targets: all-linear, init: default}
    from deltatune.methods.dora import METHOD          # the registry row
    installed = METHOD.install(model, DoraConfig(r=8), InstallContext())
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.dora import peft_format
from deltatune.methods.dora.config import DoraConfig
from deltatune.methods.dora.layer import DoRALinear
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.lora import check_rank, lora_targets, start_product_to_rank_2r
from deltatune.methods.lora.plus import b_ratio_param_groups
from deltatune.methods.peft_layout import from_peft_key, to_peft_key
from deltatune.methods.protocol import InstallContext, Method, MethodHooks, PeftTwin

__all__ = ["METHOD", "DoraConfig", "DoRALinear", "install_dora", "wrap_dora"]


def wrap_dora(module: nn.Module, cfg: DoraConfig, name: str = "") -> DoRALinear:
    """A DoRA wrapper around `module` (not yet swapped into the model)."""
    if type(module) is not nn.Linear:
        raise DeltatuneError(f"DoRA supports nn.Linear only; {name or 'module'} is {type(module).__name__}")
    return DoRALinear(module, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout, rslora=cfg.rslora, init=cfg.init)


def install_dora(model: nn.Module, cfg: DoraConfig, ctx: InstallContext) -> WrapperInstall:
    """A fresh DoRALinear around every target (A, B and m require grad; the bases untouched);
    the LoRA+ param groups hook (train.lr_ratio_b; m is 1-D: no weight decay)."""
    names = lora_targets(model, cfg)  # raises on a bad target before anything changes
    check_rank(model, names, cfg.r, cfg.init)
    wrappers = {name: wrap_dora(model.get_submodule(name), cfg, name) for name in names}
    return WrapperInstall(model, wrappers, MethodHooks(param_groups=b_ratio_param_groups(wrappers)))


METHOD = Method(
    name="dora",
    capacity_hint="a larger rank (method.r) or more target modules (method.targets)",
    config_cls=DoraConfig,
    install=install_dora,
    peft=PeftTwin("LORA", peft_format.peft_adapter_config, peft_format.config_from_peft, to_peft_key, from_peft_key,
                  accepts=peft_format.is_dora),
    save_as=start_product_to_rank_2r,  # a PiSSA / OLoRA start: the rank-2r DoRA it equals
    summary="LoRA on each weight's direction plus a trained magnitude per row (Liu et al. 2024)",
)
