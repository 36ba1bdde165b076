"""Full fine-tuning (`name: full`): every parameter of the model trains.

    from deltatune.methods.full import FullConfig, apply_full
    apply_full(model, FullConfig())
"""

from __future__ import annotations

from torch import nn

from deltatune.methods.full.config import FullConfig

__all__ = ["FullConfig", "apply_full", "full_parameters"]


def full_parameters(model: nn.Module, cfg: FullConfig) -> list[str]:
    """Every parameter name (tied weights once, under their first name)."""
    return [name for name, _ in model.named_parameters()]


def apply_full(model: nn.Module, cfg: FullConfig) -> None:
    model.requires_grad_(True)
