"""Delta-LoRA (Zi et al. 2023, arXiv:2309.02411): LoRA whose base weights also learn, each
optimiser step moving W by λ times the change of s B A (equations: `layer.py`).

    method: {name: delta_lora, r: 16, alpha: 32, targets: all-linear, delta_lambda: 2.0, delta_warmup: 500}
    from deltatune.methods.delta_lora import METHOD     # the registry row

The targets' base weights change in place, so the row says `trains_base_weights` (the base
loads in fp32; no switched-off state once trained), and the saved adapter is a full model
delta in our own layout (model.safetensors): every target's trained `base_layer.weight` plus
A, B and the previous A, B. It applies to the base it was trained on; merged, W + s B A is a
plain model. The LoRA+ param groups hook (train.lr_ratio_b) applies as for LoRA.
"""

from __future__ import annotations

import warnings

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.delta_lora.config import DeltaLoraConfig
from deltatune.methods.delta_lora.install import DeltaLoraInstall
from deltatune.methods.delta_lora.layer import DeltaLoRALinear
from deltatune.methods.lora import check_rank, lora_targets
from deltatune.methods.lora.plus import b_ratio_param_groups
from deltatune.methods.protocol import InstallContext, Method, MethodHooks

__all__ = ["METHOD", "DeltaLoraConfig", "DeltaLoRALinear", "DeltaLoraInstall", "install_delta_lora"]


def check_untied(model: nn.Module, names: list[str]) -> None:
    """A target's weight must be its own: Delta-LoRA writes it, and a weight tied to another
    module (an output head tied to the input embeddings) would move that module too."""
    owners: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            owners[id(weight)] = owners.get(id(weight), 0) + 1
    for name in names:
        if owners[id(model.get_submodule(name).weight)] > 1:
            raise DeltatuneError(
                f"method.targets selects {name}, whose weight is tied to another module; delta_lora writes "
                f"its targets' weights, which would move that module too: leave {name} out of method.targets")


def wrap_delta_lora(module: nn.Module, cfg: DeltaLoraConfig, name: str) -> DeltaLoRALinear:
    if type(module) is not nn.Linear:
        raise DeltatuneError(f"delta_lora supports nn.Linear only; {name} is {type(module).__name__}")
    return DeltaLoRALinear(module, r=cfg.r, alpha=cfg.alpha, rslora=cfg.rslora, init=cfg.init)


def delta_lora_hooks(wrappers: dict[str, DeltaLoRALinear], cfg: DeltaLoraConfig) -> MethodHooks:
    """After every optimiser step: each target's W += λ s (B A - B_prev A_prev) once past
    `delta_warmup` steps (steps 1..K only remember A, B). The paper's Algorithm 1 tests `t > K`
    with t counted from 0, one step later than here; at its K = 500 that is immaterial, and
    here `delta_warmup: 0` means every step moves W."""
    seen = {"step": 0}

    def after_step(step: int) -> None:
        ratio = cfg.delta_lambda if step > cfg.delta_warmup else 0.0
        for wrapper in wrappers.values():
            wrapper.fold_step(ratio)
        seen["step"] = step

    def begin(total_steps: int) -> None:
        if total_steps <= cfg.delta_warmup:
            warnings.warn(f"method.delta_warmup={cfg.delta_warmup} >= this run's {total_steps} optimiser steps: "
                          f"the base weights never move and delta_lora trains as plain LoRA; lower "
                          f"method.delta_warmup (e.g. to ~5% of the steps)", stacklevel=2)

    def report() -> dict:
        return {"base_weight_updates": max(0, seen["step"] - cfg.delta_warmup),
                "delta_lambda": cfg.delta_lambda, "delta_warmup": cfg.delta_warmup}

    return MethodHooks(after_optimizer_step=after_step, param_groups=b_ratio_param_groups(wrappers),
                       begin=begin, report=report)


def install_delta_lora(model: nn.Module, cfg: DeltaLoraConfig, ctx: InstallContext) -> DeltaLoraInstall:
    """A DeltaLoRALinear around every target (A, B require grad; W moved by the after-step hook)."""
    names = lora_targets(model, cfg)  # raises on a bad target before anything changes
    check_rank(model, names, cfg.r)
    check_untied(model, names)
    wrappers = {name: wrap_delta_lora(model.get_submodule(name), cfg, name) for name in names}
    return DeltaLoraInstall(model, wrappers, ctx, delta_lora_hooks(wrappers, cfg))


METHOD = Method(
    name="delta_lora",
    capacity_hint="a larger rank (method.r) or more target modules (method.targets)",
    config_cls=DeltaLoraConfig,
    install=install_delta_lora,
    trains_base_weights=True,
    summary="LoRA whose base weights also move by λ x the change of s·B·A each step (Zi et al. 2023)",
)
