"""How long to train: `train.epochs: auto`, `warmup_steps: auto`, `eval_every: auto` resolved
from the size of the user's training set.

    budget = plan_budget(cfg.train, n_user=810, batches_per_epoch=115)
    budget.total_steps, budget.epochs, budget.warmup_steps, budget.eval_every, budget.rule

Why size-aware: a fixed number of epochs is tuned to one dataset. Tuned on the built-in
orgfacts (810 rows, six phrasings per fact), 1.5 epochs learnt it; the same YAML on a user's 48
rows (24 facts, two phrasings each) ran 29 optimiser steps and learnt nothing (held-out 0% ->
0.7%), while 8 epochs of the same 48 rows reached 97.9%. What a fact needs is enough passes
over its few phrasings; what a large set needs is not to be over-trained (and not to take
hours). So `auto` aims at AUTO_VISITS example visits in total, i.e.

    epochs = clamp(AUTO_VISITS / n_user, AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS)

48 rows -> 8 epochs, 300 rows -> 5.3, 810 rows (orgfacts) -> 2, 5000 rows -> 2. `n_user`
counts the user's examples only: replay examples ride along in every epoch but do not
lengthen the budget.

The rule for explicit settings: `train.max_steps`, when set, wins over `train.epochs` (auto or
a number); the two together print a note. Warm-up `auto` is WARMUP_SHARE of the steps (at
least one); `eval_every: auto` validates about EVALS_PER_RUN times per run, so early stopping
and best-weights restore have points to choose from whatever the budget.
"""

from __future__ import annotations

import dataclasses
import math

AUTO_VISITS = 1600
AUTO_MIN_EPOCHS = 2.0
AUTO_MAX_EPOCHS = 8.0
WARMUP_SHARE = 0.05
EVALS_PER_RUN = 8

AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Budget:
    total_steps: int
    epochs: float  # passes over the training set the steps amount to
    warmup_steps: int
    eval_every: int | None
    rule: str  # how total_steps was chosen, for the log and eval.json

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def auto_epochs(n_user: int) -> float:
    """Epochs for `n_user` training examples under the `auto` rule (module docstring)."""
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, AUTO_VISITS / max(n_user, 1)))


def plan_budget(train_cfg, n_user: int, batches_per_epoch: int) -> Budget:
    """The concrete steps / epochs / warm-up / validation interval for this run."""
    per_step = train_cfg.grad_accum
    if train_cfg.max_steps:
        total = train_cfg.max_steps
        epochs = total * per_step / max(batches_per_epoch, 1)
        rule = f"train.max_steps {total}"
        if "epochs" in train_cfg.model_fields_set and train_cfg.epochs != AUTO:
            rule += f" (wins over train.epochs {train_cfg.epochs})"
    else:
        if train_cfg.epochs == AUTO:
            epochs = round(auto_epochs(n_user), 2)
            rule = (f"train.epochs auto: {epochs:g} epochs for {n_user} training examples "
                    f"(clamp({AUTO_VISITS} / {n_user}, {AUTO_MIN_EPOCHS:g}, {AUTO_MAX_EPOCHS:g}))")
        else:
            epochs = float(train_cfg.epochs)
            rule = f"train.epochs {epochs:g}"
        total = max(1, math.ceil(epochs * batches_per_epoch / per_step))
    warmup = train_cfg.warmup_steps
    if warmup == AUTO:
        warmup = max(1, round(WARMUP_SHARE * total))
    eval_every = train_cfg.eval_every
    if eval_every == AUTO:
        eval_every = max(1, math.ceil(total / EVALS_PER_RUN))
    return Budget(total, epochs, int(warmup), eval_every, rule)


def resolved_train_config(train_cfg, budget: Budget):
    """`train_cfg` with the `auto` values replaced by the budget's numbers (what the optimiser,
    the schedule and the validator read)."""
    update = {"warmup_steps": budget.warmup_steps, "eval_every": budget.eval_every}
    if train_cfg.epochs == AUTO:
        update["epochs"] = budget.epochs
    return train_cfg.model_copy(update=update)
