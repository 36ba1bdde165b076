"""One optimiser step, as a building block every recipe composes: token-weighted gradient
accumulation, the method's extra loss, clipping, the NaN/inf guard, AdamW, the schedule, and
the method's after-step hook (which still sees the step's gradients: AdaLoRA's importance
scores are computed from them).

    stepper = OptimiserStep(model, installed, cfg.train, total_steps, loss_fn=model_lm_loss)
    result = stepper.step(micro_batches, step_number=1)    # StepResult(loss, tokens, grad_norm, lr)

`loss_fn(model, batch) -> (mean loss over the batch's units, unit count)` is the recipe's
choice (LM tokens for sft/pt; pairs for preference losses). Each micro-batch's mean is
weighted by its share of the step's units, so 2 micro-batches of 4 give the gradient of one
batch of 8. A non-finite loss or gradient norm raises `NonFinite` before the optimiser moves,
so a poisoned step never reaches the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deltatune.data.labels import IGNORE_INDEX
from deltatune.models.device import autocast_for, model_device
from deltatune.training.distributed import ProcessGroup
from deltatune.training.fsdp import NoSharding
from deltatune.training.optim import build_optimizer, build_scheduler

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, int]]


def labelled_tokens(batch: dict) -> int:
    """Units of an LM batch: positions whose next token carries a label."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


@dataclass
class StepResult:
    loss: float  # unit-weighted mean loss of the step (before the update)
    tokens: int  # units (labelled tokens) in the step
    grad_norm: float  # before clipping
    lr: float  # the learning rate this step used


class NonFinite(Exception):
    """The loss or gradient norm was NaN/inf: `what` for people, `field` for metrics.jsonl."""

    def __init__(self, what: str, field: str, value: float, lr: float):
        super().__init__(f"{what} became {value}")
        self.what, self.field, self.value, self.lr = what, field, value, lr


class OptimiserStep:
    """AdamW over the installed method's trainable tensors, and the schedule (see module docstring)."""

    def __init__(self, model, installed, train_cfg, total_steps: int, loss_fn: LossFn,
                 units: Callable[[dict], int] = labelled_tokens, group: ProcessGroup | None = None,
                 sharding: NoSharding | None = None):
        self.model, self.installed, self.cfg = model, installed, train_cfg
        self.group = group or ProcessGroup()  # several processes: each holds a share of every batch
        self.sharding = sharding or NoSharding()  # fsdp: the blocks' weights split over the processes
        self.loss_fn, self.units = loss_fn, units
        self.hooks = installed.hooks
        if self.hooks.begin is not None:
            self.hooks.begin(total_steps)
        groups = self.hooks.param_groups(train_cfg) if self.hooks.param_groups else None
        self.optimizer = build_optimizer(model, train_cfg, groups)
        self.scheduler = build_scheduler(self.optimizer, train_cfg.schedule, train_cfg.warmup_steps, total_steps)
        self.params = installed.trainable()  # model order: the clipped norm sums as it always did

    def accumulate(self, batches: list[dict], dtype: str = "float32") -> tuple[float, int]:
        """Backward over micro-batches so the gradient is that of one batch holding all of them
        (over every process: each weights its share by the step's global units, see
        deltatune.training.distributed). Returns (unit-weighted mean loss, global units);
        raises NonFinite on a non-finite loss (on every process, if any process saw one)."""
        device = model_device(self.model)
        total = int(self.group.sum([sum(self.units(b) for b in batches)])[0])
        loss_sum, bad = 0.0, None
        for batch in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast_for(dtype, device):
                loss, n = self.loss_fn(self.model, batch)
                if self.hooks.extra_loss is not None and n:
                    loss = loss + self.hooks.extra_loss()
            if n == 0:
                continue
            if not torch.isfinite(loss):
                bad = float(loss)
                break
            (loss * (n / total)).backward()
            loss_sum += loss.item() * n
        if self.group.world > 1:  # every process must stop together, or the others would hang
            loss_sum, bad_anywhere = self.group.sum([loss_sum, 0.0 if bad is None else 1.0])
            bad = bad if bad is not None else (float("nan") if bad_anywhere else None)
        if bad is not None:
            raise NonFinite("the training loss", "loss", bad, self.lr)
        return (loss_sum / total if total else 0.0), total

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, batches: list[dict], step_number: int, dtype: str = "float32") -> StepResult:
        """Accumulate, guard, clip, update, schedule; `step_number` = steps done after this one."""
        lr = self.lr
        loss, tokens = self.accumulate(batches, dtype)
        # the whole batch's gradient on every process (fsdp reduce-scatters the blocks' own)
        self.group.all_reduce_grads(self.sharding.replicated(self.params))
        grad_norm = self.sharding.clip_grad_norm(self.params, self.cfg.max_grad_norm or float("inf"))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFinite("the gradient norm", "grad_norm", grad_norm, lr)
        self.optimizer.step()
        self.scheduler.step()
        if self.hooks.after_optimizer_step is not None:  # this step's gradients are still in .grad
            with torch.no_grad():
                self.hooks.after_optimizer_step(step_number)
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss, tokens, grad_norm, lr)

    def set_base_lr(self, lr: float, step: int) -> None:
        """After a resume: the configured lr wins over the saved one (e.g. lowered after a NaN
        stop); an unchanged config gives identical values, so an exact resume stays exact.
        A method's param group keeps its `lr_ratio` to train.lr."""
        groups = self.optimizer.param_groups
        bases = [lr * group.get("lr_ratio", 1.0) for group in groups]
        self.scheduler.base_lrs = bases
        for group, base, factor in zip(groups, bases, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(step)
        self.scheduler._last_lr = [group["lr"] for group in groups]
