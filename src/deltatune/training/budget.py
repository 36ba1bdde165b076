"""How long and in what steps to train: `train.epochs: auto`, `train.batch_size: auto`,
`warmup_steps: auto` and `eval_every: auto` resolved from the size of the user's training set.

    batch = train_batch_size(cfg.train, n_user=48)                     # 2
    budget = plan_budget(cfg.train, n_user=48, batches_per_epoch=36, batch_size=batch)
    budget.total_steps, budget.epochs, budget.batch_size, budget.warmup_steps, budget.rule

Why size-aware: a fixed budget is tuned to one dataset. Tuned on the built-in orgfacts (810
rows, six phrasings per fact), 2 epochs of batches of 8 learnt it; the same YAML on a user's 48
rows (24 facts, two phrasings each) ran 29 optimiser steps and learnt nothing. A fact with two
phrasings needs many *updates*, not only many passes. Measured on school-24 (48 rows, no
replay, lr 1e-3, 8 epochs): batches of 8 (48 steps) 20.8% held-out, batches of 2 (192 steps,
the same tokens and about the same time) 50.0%; 16 epochs of batches of 2: 91.7%. So:

    batch_size = the largest of AUTO_BATCH_SIZES giving >= MIN_STEPS_PER_EPOCH steps per epoch
    epochs     = clamp(AUTO_VISITS / n_user, AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS)

48 rows -> batches of 2, 12 epochs; 120 rows -> 4, 12; 300 rows -> 8, 5.3; 810 rows (orgfacts)
-> 8, 2; 5000 rows -> 8, 2. `n_user` counts the user's examples only: replay examples ride
along in every epoch but do not lengthen the budget.

The rule for explicit settings: a number for `train.batch_size` or `train.epochs` is used as
given; `train.max_steps`, when set, wins over `train.epochs` (auto or a number); the two
together print a note. Warm-up `auto` is WARMUP_SHARE of the steps (at least one);
`eval_every: auto` validates about EVALS_PER_RUN times per run, so early stopping and
best-weights restore have points to choose from whatever the budget.
"""

from __future__ import annotations

import dataclasses
import math

AUTO_VISITS = 1600
AUTO_MIN_EPOCHS = 2.0
AUTO_MAX_EPOCHS = 12.0
AUTO_BATCH_SIZES = (8, 4, 2)  # tried largest first
MIN_STEPS_PER_EPOCH = 24
WARMUP_SHARE = 0.05
EVALS_PER_RUN = 8

AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Budget:
    total_steps: int
    epochs: float  # passes over the training set the steps amount to
    batch_size: int  # examples per micro-batch
    warmup_steps: int
    eval_every: int | None
    rule: str  # how total_steps was chosen, for the log and eval.json

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def auto_epochs(n_user: int) -> float:
    """Epochs for `n_user` training examples under the `auto` rule (module docstring)."""
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, AUTO_VISITS / max(n_user, 1)))


def auto_batch_size(n_user: int) -> int:
    """Micro-batch size for `n_user` training examples under the `auto` rule (module docstring)."""
    for size in AUTO_BATCH_SIZES:
        if n_user / size >= MIN_STEPS_PER_EPOCH:
            return size
    return AUTO_BATCH_SIZES[-1]


def train_batch_size(train_cfg, n_user: int) -> int:
    """`train.batch_size` as a number: as given, or `auto` resolved for `n_user` examples."""
    return auto_batch_size(n_user) if train_cfg.batch_size == AUTO else int(train_cfg.batch_size)


def validation_batch_size(train_cfg) -> int:
    """Batch for loss-only passes (validation): the training batch, or the largest auto size
    when that is `auto` (the loss is a mean over tokens, so the batch only changes speed)."""
    return AUTO_BATCH_SIZES[0] if train_cfg.batch_size == AUTO else int(train_cfg.batch_size)


def plan_budget(train_cfg, n_user: int, batches_per_epoch: int, batch_size: int | None = None) -> Budget:
    """The concrete steps / epochs / warm-up / validation interval for this run;
    `batch_size` is the micro-batch `batches_per_epoch` was counted with."""
    batch_size = batch_size if batch_size is not None else train_batch_size(train_cfg, n_user)
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
    if train_cfg.batch_size == AUTO:
        rule += (f"; train.batch_size auto: {batch_size} (the largest of {list(AUTO_BATCH_SIZES)} "
                 f"with >= {MIN_STEPS_PER_EPOCH} steps per epoch)")
    return Budget(total, epochs, batch_size, int(warmup), eval_every, rule)


def resolved_train_config(train_cfg, budget: Budget):
    """`train_cfg` with the `auto` values replaced by the budget's numbers (what the optimiser,
    the schedule and the validator read)."""
    update = {"warmup_steps": budget.warmup_steps, "eval_every": budget.eval_every, "batch_size": budget.batch_size}
    if train_cfg.epochs == AUTO:
        update["epochs"] = budget.epochs
    return train_cfg.model_copy(update=update)
