"""IA3 (Liu et al. 2022): learned vectors rescaling chosen Linears' outputs (attention keys and
values) or inputs (the FFN's intermediate activation). Config, layer, PEFT format.

    method: {name: ia3, targets: [k_proj, v_proj, down_proj], feedforward: [down_proj]}
    from deltatune.methods.ia3 import METHOD           # the registry row
    installed = METHOD.install(model, IA3Config(), InstallContext())
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.ia3 import peft_format
from deltatune.methods.ia3.config import IA3Config
from deltatune.methods.ia3.layer import IA3Linear
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.modules import match_linear_targets, match_names
from deltatune.methods.peft_layout import from_peft_key, to_peft_key
from deltatune.methods.protocol import InstallContext, Method, PeftTwin

__all__ = ["METHOD", "IA3Config", "IA3Linear", "ia3_targets", "install_ia3", "wrap_ia3"]


def ia3_targets(model: nn.Module, cfg: IA3Config) -> dict[str, bool]:
    """{full name of each targeted Linear: is it feedforward}, in model order. Errors (before
    anything changes) when a `targets` pattern matches no Linear or a `feedforward` pattern
    matches none of the targeted modules."""
    names = match_linear_targets(model, cfg.targets, key="method.targets")
    feedforward = set(match_names(names, cfg.feedforward, key="method.feedforward")) if cfg.feedforward else set()
    return {name: name in feedforward for name in names}


def wrap_ia3(module: nn.Module, feedforward: bool, name: str = "") -> IA3Linear:
    """An IA3 wrapper around `module` (not yet swapped into the model)."""
    if type(module) is not nn.Linear:
        raise DeltatuneError(f"IA3 supports nn.Linear only; {name or 'module'} is {type(module).__name__}")
    return IA3Linear(module, feedforward=feedforward)


def install_ia3(model: nn.Module, cfg: IA3Config, ctx: InstallContext) -> WrapperInstall:
    """A fresh IA3Linear (vector of ones, requires grad) around every target; the bases untouched."""
    targets = ia3_targets(model, cfg)  # raises on a bad pattern before anything changes
    wrappers = {name: wrap_ia3(model.get_submodule(name), ff, name) for name, ff in targets.items()}
    return WrapperInstall(model, wrappers)


METHOD = Method(
    name="ia3",
    capacity_hint="more target modules (method.targets) or another method with more capacity (lora)",
    config_cls=IA3Config,
    install=install_ia3,
    peft=PeftTwin("IA3", peft_format.peft_adapter_config, peft_format.config_from_peft, to_peft_key, from_peft_key),
    summary="learned vectors rescaling attention keys/values and FFN activations (Liu et al. 2022)",
)
