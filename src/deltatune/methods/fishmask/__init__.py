"""FISH Mask (Sung, Nair & Raffel 2021, arXiv:2111.09839): train only the k weight entries with
the largest Fisher information, a mask fixed before training.

    method: {name: fishmask, keep_ratio: 0.005, num_samples: 1024}
    installed = apply_method(model, cfg)            # mask not chosen yet
    installed.prepare(train_batches)                # the empirical Fisher over N examples -> mask
    ... train ...                                   # only the k masked entries move

The Fisher needs data, which install does not get: `FishMaskInstall.prepare(batches, loss_fn)`
is the method's `MethodHooks.prepare`, which the training loop calls once on a fresh run, before
the optimiser is built, with the run's training batches. Until it runs, a training forward with
`mask: fisher` raises;
`mask: random` chooses its k entries at install from `seed` and needs no data. A loaded
adapter or checkpoint brings its mask along (`fishmask.indices`).

Candidates are the targets' Linear weights (default every Linear but the LM head);
k = int(keep_ratio * candidates), one global top-k. The trained entries live beside the frozen
base as a sparse delta (see `layer.py`), which is what is saved: `fishmask.indices` +
`fishmask.values`. Mergeable: the values are added into the base weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.fishmask.config import FishMaskConfig
from deltatune.methods.fishmask.fisher import estimate_fisher, random_mask, top_k_mask
from deltatune.methods.fishmask.layer import SLOT, SparseDelta, SparseDeltaLinear, check_indices
from deltatune.methods.installs import SharedSlotInstall, check_state, copy_state
from deltatune.methods.modules import match_linear_targets
from deltatune.methods.protocol import InstallContext, Method, MethodHooks

__all__ = ["METHOD", "FishMaskConfig", "FishMaskInstall", "SparseDelta", "SparseDeltaLinear", "install_fishmask"]


class FishMaskInstall(SharedSlotInstall):
    """The `Installed` of FISH Mask: wrappers over the targets plus the one sparse delta they
    share, on the model as `SLOT` (attach / detach / merge: `SharedSlotInstall`)."""

    def __init__(self, model: nn.Module, cfg: FishMaskConfig, delta: SparseDelta,
                 wrappers: dict[str, SparseDeltaLinear]):
        self.cfg, self.delta = cfg, delta
        super().__init__(model, SLOT, delta, wrappers)
        self.hooks = MethodHooks(report=self.report, prepare=self.prepare)

    # -- the data step (see the module docstring)
    def prepare(self, batches: Iterable[dict], loss_fn: Callable | None = None) -> dict:
        """Estimate the empirical Fisher over the first `cfg.num_samples` examples of `batches`
        and keep the top `keep_ratio` entries; the values restart at zero. Returns a summary."""
        if self.cfg.mask != "fisher":
            return {"mask": self.cfg.mask}
        if loss_fn is None:
            from deltatune.losses.lm import model_lm_loss as loss_fn
        if bool(self.delta.values.detach().any()):
            raise DeltatuneError("fishmask: prepare() must run before training (the mask is fixed, and "
                                 "choosing a new one would throw the trained values away)")
        fisher, used = estimate_fisher(self.model, self.wrappers, batches, self.cfg.num_samples, loss_fn)
        if used == 0:
            raise DeltatuneError("fishmask: the training batches held no labelled token, so there is no "
                                 "log-likelihood to estimate the Fisher from (check data.train)")
        self.delta.set_mask(top_k_mask(list(fisher.values()), self.delta.values.numel()), source="fisher")
        return {"mask": "fisher", "examples": used, "keep": self.delta.values.numel()}

    # -- the protocol
    def state(self) -> dict[str, torch.Tensor]:
        return {f"{SLOT}.values": self.delta.values.detach(), f"{SLOT}.indices": self.delta.indices}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Check names, shapes and the mask (k distinct int64 positions in range), then copy."""
        targets = {f"{SLOT}.values": self.delta.values, f"{SLOT}.indices": self.delta.indices}
        check_state(targets, tensors, where)
        try:
            check_indices(tensors[f"{SLOT}.indices"], self.delta.values.numel(), self.delta.total,
                          f"saved {SLOT}.indices")
        except DeltatuneError as err:
            raise DeltatuneError(f"{where}: {err}") from None
        copy_state(targets, tensors, where)
        self.delta.loaded()

    def trainable(self) -> list[nn.Parameter]:
        return [self.delta.values] if self.delta.values.requires_grad else []

    def report(self) -> dict:
        counts = self.delta.counts()
        return {"mask": self.delta.source, "keep": self.delta.values.numel(), "candidates": self.delta.total,
                "keep_ratio": self.cfg.keep_ratio,
                "per_module": {name: {"kept": c, "of": size} for name, c, size
                               in zip(self.wrappers, counts, self.delta.sizes)}}


def install_fishmask(model: nn.Module, cfg: FishMaskConfig, ctx: InstallContext) -> FishMaskInstall:
    """Wrappers over the targets and a zero sparse delta of k entries; the bases untouched.
    `mask: random` draws its k positions here; `fisher` waits for `prepare`."""
    names = match_linear_targets(model, cfg.targets, key="method.targets")  # raises before any change
    for name in names:
        if type(model.get_submodule(name)) is not nn.Linear:
            raise DeltatuneError(f"method.targets: FISH Mask supports nn.Linear only; {name} is "
                                 f"{type(model.get_submodule(name)).__name__}")
    if hasattr(model, SLOT):
        raise DeltatuneError(f"{type(model).__name__} already has a {SLOT!r} attribute")
    sizes = [model.get_submodule(n).weight.numel() for n in names]
    keep = int(cfg.keep_ratio * sum(sizes))
    if keep < 1:
        raise DeltatuneError(f"method.keep_ratio={cfg.keep_ratio} keeps 0 of the targets' {sum(sizes)} weights; "
                             f"raise it to at least {1 / sum(sizes):.2g}")
    device = model.get_submodule(names[0]).weight.device
    delta = SparseDelta(sizes, keep, device=device)
    if ctx.initialise and cfg.mask == "random":
        delta.set_mask(random_mask(delta.total, keep, cfg.seed), source="random")
    wrappers = {name: SparseDeltaLinear(model.get_submodule(name), delta, t) for t, name in enumerate(names)}
    return FishMaskInstall(model, cfg, delta, wrappers)


METHOD = Method(
    name="fishmask",
    capacity_hint="a larger share of trained weights (method.keep_ratio)",
    config_cls=FishMaskConfig,
    install=install_fishmask,
    summary="only the k weight entries of largest Fisher information train, a fixed sparse mask "
            "(Sung et al. 2021)",
)
