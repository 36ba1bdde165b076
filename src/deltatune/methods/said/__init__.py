"""Intrinsic SAID (Aghajanyan et al. 2021, arXiv:2012.13255): fine-tune in a random
d-dimensional subspace of the target weights, plus one learned scale per weight tensor.

    method: {name: said, d: 2000, seed: 0}
    from deltatune.methods.said import METHOD           # the registry row

Trainable: d numbers in all — theta (d - m) through a Fastfood projection (`fastfood.py`,
O(n + d) memory, never a d x n matrix) and lambda (m, one per target tensor), as the paper
counts them. Saved: `said.theta` and `said.lambdas`; the projection comes back from the
config's `seed`. Mergeable: W0 + lambda_t (P theta)_t is written into the base weights.

Why large learning rates: P has unit-norm columns spread over all n weights, so a step of
size 1 in theta moves each weight by about 1/sqrt(n) (~1e-4 for SmolLM2's 1e8 linear
weights); the paper's intrinsic-dimension runs likewise train theta with far larger rates than
full fine-tuning uses.
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.installs import SharedSlotInstall, copy_state
from deltatune.methods.modules import match_linear_targets
from deltatune.methods.protocol import InstallContext, Method, MethodHooks
from deltatune.methods.said.config import SAIDConfig
from deltatune.methods.said.fastfood import FastfoodProjection, fwht, hadamard
from deltatune.methods.said.layer import SLOT, SAIDLinear, SAIDParams

__all__ = ["METHOD", "FastfoodProjection", "SAIDConfig", "SAIDInstall", "SAIDLinear", "SAIDParams",
           "fwht", "hadamard", "install_said"]


class SAIDInstall(SharedSlotInstall):
    """The `Installed` of SAID: wrappers over the targets plus the one `SAIDParams` they share,
    on the model as `SLOT` (attach / detach / merge: `SharedSlotInstall`)."""

    def __init__(self, model: nn.Module, params: SAIDParams, wrappers: dict[str, SAIDLinear]):
        self.params = params
        super().__init__(model, SLOT, params, wrappers)
        self.hooks = MethodHooks(report=self.report)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"{SLOT}.theta": self.params.theta, f"{SLOT}.lambdas": self.params.lambdas}

    def state(self) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in self._tensors().items()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        copy_state(self._tensors(), tensors, where)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in (self.params.theta, self.params.lambdas) if p.requires_grad]

    def report(self) -> dict:
        lambdas = self.params.lambdas.detach().cpu().tolist()
        return {"d": self.params.theta.numel() + len(lambdas), "projected": self.params.theta.numel(),
                "tensors": len(lambdas), "parameters": self.params.offsets[-1],
                "theta_norm": float(self.params.theta.detach().norm()),
                "lambda": dict(zip(self.wrappers, lambdas))}


def install_said(model: nn.Module, cfg: SAIDConfig, ctx: InstallContext) -> SAIDInstall:
    """Wrappers over the targets and theta = 0, lambda = 1 (the base at step 0); W0 untouched."""
    names = match_linear_targets(model, cfg.targets, key="method.targets")  # raises before any change
    for name in names:
        if type(model.get_submodule(name)) is not nn.Linear:
            raise DeltatuneError(f"method.targets: SAID supports nn.Linear only; {name} is "
                                 f"{type(model.get_submodule(name)).__name__}")
    if hasattr(model, SLOT):
        raise DeltatuneError(f"{type(model).__name__} already has a {SLOT!r} attribute")
    sizes = [model.get_submodule(n).weight.numel() for n in names]
    m, n = len(sizes), sum(sizes)
    if cfg.d > n:
        raise DeltatuneError(f"method.d={cfg.d} exceeds the {n} weights of the targets: an intrinsic dimension "
                             f"above the parameter count is no subspace; pick d <= {n} (or use full fine-tuning)")
    if cfg.d <= m:
        raise DeltatuneError(f"method.d={cfg.d} leaves nothing to project: SAID spends one of the d numbers on "
                             f"the scale of each of the {m} target tensors; pick d > {m}")
    params = SAIDParams(sizes, cfg.d, cfg.seed, device=model.get_submodule(names[0]).weight.device)
    wrappers = {name: SAIDLinear(model.get_submodule(name), params, t) for t, name in enumerate(names)}
    return SAIDInstall(model, params, wrappers)


METHOD = Method(
    name="said",
    capacity_hint="a larger intrinsic dimension (method.d)",
    config_cls=SAIDConfig,
    install=install_said,
    summary="train d numbers: a random Fastfood subspace of the weights plus one scale per tensor "
            "(Aghajanyan et al. 2021)",
)
