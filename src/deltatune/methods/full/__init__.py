"""Full fine-tuning (`name: full`): every parameter of the model trains.

    method: {name: full}
"""

from __future__ import annotations

from torch import nn

from deltatune.methods.full.config import FullConfig
from deltatune.methods.installs import TensorInstall
from deltatune.methods.protocol import InstallContext, Method

__all__ = ["METHOD", "FullConfig", "full_parameters"]


def full_parameters(model: nn.Module, cfg: FullConfig) -> list[str]:
    """Every parameter name (tied weights once, under their first name)."""
    return [name for name, _ in model.named_parameters()]


def install_full(model: nn.Module, cfg: FullConfig, ctx: InstallContext) -> TensorInstall:
    return TensorInstall(model, full_parameters(model, cfg), ctx)


METHOD = Method(
    name="full",
    config_cls=FullConfig,
    install=install_full,
    trains_base_weights=True,
    summary="every parameter trains",
)
