"""AdaLoRA's budget allocation and regulariser as method hooks: nothing for the trainer to call.

    allocator = RankAllocator(cfg, {name: SVDLinear, ...})
    hooks = allocator.hooks()     # begin, extra_loss, after_optimizer_step, report

Zhang et al. 2023 (arXiv:2303.10512), Sec. 3.3 and Algorithm 1, with peft's exact schedule.
With b0 = init_r x layers, bT = target_r x layers and T the optimiser steps of the run:

    step <= tinit:               b = b0, no pruning (the scores warm up)
    tinit < step < T - tfinal:   b = bT + (b0 - bT) (1 - (step - tinit) / (T - tfinal - tinit))^3,
                                 rounded down; prune to b every delta_t steps
    step == T - tfinal:          prune to bT, fix that mask, drop the scores
    step > T - tfinal:           re-apply the fixed mask after every step

Pruning ranks all triplets of all layers by their score S_i (`SVDLinear.triplet_scores`) and
zeroes E_i of the (b0 - b) lowest, ties at the threshold included (as peft). The scores are
updated from the step's gradients before the allocation, while step < T - tfinal.
`after_optimizer_step` runs after the optimiser step and before zero_grad (`OptimiserStep`),
the place peft's `update_and_allocate` is called; `begin(total_steps)` gives T once the run's
length is known (`method.total_step` wins when set).

Orthogonality regulariser (Sec. 3.1; the paper squares the norms and sums them), normalised as
peft does — not squared, averaged over the 2 L matrices:

    R = orth_reg_weight / (2 L) * sum_layers (||A A^T - I||_F + ||B^T B - I||_F)
"""

from __future__ import annotations

import torch

from deltatune.errors import DeltatuneError
from deltatune.methods.adalora.config import AdaLoraConfig, check_schedule
from deltatune.methods.adalora.layer import SVDLinear
from deltatune.methods.protocol import MethodHooks


def scheduled_budget(step: int, init_budget: int, target_budget: int, tinit: int, tfinal: int, total: int,
                     delta_t: int) -> tuple[int, bool]:
    """(budget, prune now?) after optimiser step `step` (module docstring; peft's `budget_schedule`)."""
    if step <= tinit:
        return init_budget, False
    if step > total - tfinal:
        return target_budget, True
    left = 1 - (step - tinit) / (total - tfinal - tinit)
    return int((init_budget - target_budget) * (left ** 3) + target_budget), step % delta_t == 0


class RankAllocator:
    """The budget schedule, importance updates and pruning over one model's SVDLinear layers."""

    def __init__(self, cfg: AdaLoraConfig, layers: dict[str, SVDLinear]):
        self.cfg, self.layers = cfg, layers
        self.init_budget = sum(layer.r for layer in layers.values())
        self.target_budget = cfg.target_r * len(layers)
        self.total: int | None = cfg.total_step

    def hooks(self) -> MethodHooks:
        return MethodHooks(extra_loss=self.regulariser, after_optimizer_step=self.after_optimizer_step,
                           begin=self.begin, report=self.report)

    def begin(self, total_steps: int) -> None:
        """The run's optimiser steps (method.total_step wins); the schedule must fit them."""
        if self.cfg.total_step is not None:
            return
        check_schedule(self.cfg.tinit, self.cfg.tfinal, total_steps, "this run (train.max_steps / train.epochs)",
                       error=DeltatuneError)
        self.total = total_steps

    def regulariser(self) -> torch.Tensor:
        """orth_reg_weight x the mean of ||A A^T - I||_F and ||B^T B - I||_F over all layers."""
        norms = [norm for layer in self.layers.values() for norm in layer.orthogonality()]
        return self.cfg.orth_reg_weight * (sum(norms) / len(norms))

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """Update the scores from this step's gradients and prune to the scheduled budget."""
        total = self._total()
        final_start = total - self.cfg.tfinal
        if step < final_start:
            for layer in self.layers.values():
                layer.update_importance(self.cfg.beta1, self.cfg.beta2)
            budget, prune = scheduled_budget(step, self.init_budget, self.target_budget, self.cfg.tinit,
                                             self.cfg.tfinal, total, self.cfg.delta_t)
            if prune:
                self.prune_to(budget)
        elif step == final_start:
            self.prune_to(self.target_budget)
            for layer in self.layers.values():
                layer.reset_importance()
        else:
            for layer in self.layers.values():
                layer.reapply_mask()

    @torch.no_grad()
    def prune_to(self, budget: int) -> None:
        """Keep the `budget` best triplets over all layers (peft's `mask_to_budget`)."""
        scores = {name: layer.triplet_scores() for name, layer in self.layers.items()}
        pruned = self.init_budget - budget
        if pruned <= 0:  # nothing to prune (target_r == init_r): every triplet stays
            keep = {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}
        else:
            threshold = torch.kthvalue(torch.cat(list(scores.values())), k=pruned).values.item()
            keep = {name: s > threshold for name, s in scores.items()}
        for name, layer in self.layers.items():
            layer.keep_triplets(keep[name])

    def report(self) -> dict:
        """Ranks per layer kept by the last allocation and the budgets (eval.json `method_report`)."""
        ranks = {name: layer.rank for name, layer in self.layers.items()}
        return {"ranks": ranks, "budget": sum(ranks.values()), "init_budget": self.init_budget,
                "target_budget": self.target_budget, "total_step": self.total}

    def _total(self) -> int:
        if self.total is None:
            raise DeltatuneError("AdaLoRA's budget schedule needs the run's length: train through "
                                 "deltatune's OptimiserStep (it calls MethodHooks.begin) or set method.total_step")
        return self.total
