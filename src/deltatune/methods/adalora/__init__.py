"""AdaLoRA (Zhang et al. 2023, arXiv:2303.10512): LoRA in SVD form whose rank budget is moved,
during training, to the layers where it matters. Config, layer, allocator, registry row.

    method: {name: adalora, init_r: 12, target_r: 8, tinit: 20, tfinal: 80, delta_t: 1}
    from deltatune.methods.adalora import METHOD       # the registry row
    installed = METHOD.install(model, AdaLoraConfig(), InstallContext())

The whole algorithm runs in the method's hooks (`allocator.RankAllocator`): the orthogonality
regulariser as `extra_loss`, importance scores and pruning in `after_optimizer_step`, the run's
length from `begin`, the final ranks from `report` — a trainer calls nothing by hand (peft's
needs `update_and_allocate(step)` after every optimiser step). Adapter folders are our own
layout (model.safetensors) with A, E, B, the rank masks and `ranknum`; the importance scores
only matter while training, so they stay in checkpoints and out of adapters.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.adalora.allocator import RankAllocator, scheduled_budget
from deltatune.methods.adalora.config import AdaLoraConfig
from deltatune.methods.adalora.layer import SCORE_BUFFERS, SVDLinear
from deltatune.methods.installs import WrapperInstall
from deltatune.methods.lora import check_rank
from deltatune.methods.modules import match_linear_targets
from deltatune.methods.protocol import InstallContext, Method

__all__ = ["METHOD", "AdaLoraConfig", "AdaLoraInstall", "RankAllocator", "SVDLinear", "install_adalora",
           "scheduled_budget"]


def _is_score(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in SCORE_BUFFERS


class AdaLoraInstall(WrapperInstall):
    """WrapperInstall that also loads an adapter folder's state, which has no importance scores
    (`without_scores`): they start at zero then. A checkpoint's full state loads as it is."""

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        if not any(_is_score(name) for name in tensors):
            tensors = {**tensors, **{n: torch.zeros_like(t) for n, t in self.state().items() if _is_score(n)}}
        super().load_state(tensors, where)


def without_scores(cfg: BaseModel, state: dict[str, torch.Tensor]) -> tuple[BaseModel, dict]:
    """What an adapter folder keeps (`Method.save_as`): the state minus Ī and Ū."""
    return cfg, {name: t for name, t in state.items() if not _is_score(name)}


def install_adalora(model: nn.Module, cfg: AdaLoraConfig, ctx: InstallContext) -> AdaLoraInstall:
    """A fresh SVDLinear (rank init_r) around every target, and the allocator's hooks."""
    names = match_linear_targets(model, cfg.targets, key="method.targets")  # raises before any change
    for name in names:
        if type(model.get_submodule(name)) is not nn.Linear:
            raise DeltatuneError(f"AdaLoRA supports nn.Linear only; {name} is "
                                 f"{type(model.get_submodule(name)).__name__} (method.targets)")
    check_rank(model, names, cfg.init_r, key="method.init_r")
    layers = {name: SVDLinear(model.get_submodule(name), cfg.init_r, cfg.alpha, cfg.dropout) for name in names}
    return AdaLoraInstall(model, layers, RankAllocator(cfg, layers).hooks())


METHOD = Method(
    name="adalora",
    capacity_hint="a larger rank budget (method.init_r / target_r) or more target modules (method.targets)",
    config_cls=AdaLoraConfig,
    install=install_adalora,
    save_as=without_scores,
    summary="LoRA in SVD form with the rank budget reallocated by importance during training (Zhang et al. 2023)",
)
