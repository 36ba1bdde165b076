"""The training loop shared by the recipes, written out top to bottom from building blocks.

    result = train(model, installed, train_set, val_set, cfg, run_dir, pad_id, resume_from=None)

One optimiser step = `grad_accum` micro-batches of `batch_size` examples. The data is one long
stream of micro-batches (epoch 0's bucketed order, then epoch 1's, ...), so a step may cross an
epoch boundary and the position of the next micro-batch, (epoch, batch_index), is all a resume
needs to replay the same data. The blocks:

    OptimiserStep (step.py)      accumulation weighted by tokens, the method's extra loss,
                                 clipping, NaN/inf guard, AdamW, schedule, the method's
                                 after-step hook
    Validator (validator.py)     val loss every `eval_every`, early stopping, best weights
    checkpoint.py                atomic `step-N` folders with the method's state (buffers too)
    MetricsLog, progress bar     metrics.jsonl rows and a bar with loss, lr, tokens/s, ETA
    ProcessGroup (distributed.py) under torchrun: this process's share of each micro-batch,
                                 gradients summed over processes; only rank 0 writes
    shard_for_run (fsdp.py)      train.distributed=fsdp: the decoder blocks' weights, gradients
                                 and optimiser state split over the processes (FSDP2)

`objective` is the recipe's (deltatune.training.objective: loss, its unit, collation, the
validation number; the LM loss by default); `installed` is the method on the model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from deltatune.data import BucketedBatches, collate
from deltatune.errors import DeltatuneError
from deltatune.training.budget import Budget, plan_budget, resolved_train_config, train_batch_size
from deltatune.training import distributed, fsdp
from deltatune.training.checkpoint import (TrainState, latest_checkpoint, load_checkpoint, load_optimiser,
                                           save_checkpoint)
from deltatune.training.metrics import MetricsLog
from deltatune.training.objective import LM_OBJECTIVE, Objective
from deltatune.training.progress import progress_bar, say, show
from deltatune.training.resources import Throughput, resources
from deltatune.training.speed import objective_for, prepare_for_training
from deltatune.training.step import NonFinite, OptimiserStep
from deltatune.training.validator import Validator, validation_loss

__all__ = ["TrainResult", "micro_batches", "train", "user_examples", "validation_loss"]


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    total_steps: int
    stop_reason: str  # "completed" | "early_stop"
    val_loss: float | None  # of the weights the model holds on return
    restored_step: int | None = None  # the step whose (best) weights were put back, if any
    budget: Budget | None = None  # the resolved steps / epochs / warm-up of the run
    resources: dict | None = None  # peak memory and training throughput (training.resources)


def user_examples(train_set) -> int:
    """Training examples that are the user's (replay examples excluded): what sizes the budget."""
    return len(train_set) - int((getattr(train_set, "stats", None) or {}).get("replay", 0))


def micro_batches(sampler: BucketedBatches, dataset, pad_id: int, epoch: int, index: int, collate_fn=collate,
                  share=lambda examples: examples):
    """Yield (next_epoch, next_index, batch) forever, starting at (epoch, index); `share` picks
    this process's examples of each micro-batch (all of them in a single process)."""
    while True:
        order = sampler.batches(epoch)
        for i in range(index, len(order)):
            batch = collate_fn(share([dataset[j] for j in order[i]]), pad_id)
            nxt = (epoch, i + 1) if i + 1 < len(order) else (epoch + 1, 0)
            yield nxt[0], nxt[1], batch
        epoch, index = epoch + 1, 0


def _non_finite(err: NonFinite, step: int, run_dir: Path) -> DeltatuneError:
    ckpt = latest_checkpoint(run_dir)
    kept = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint had been written yet"
    return DeltatuneError(
        f"{err.what} became {err.value} at optimiser step {step} (lr {err.lr:.3g}); training stopped and "
        f"{kept}. Lower train.lr (and/or set train.max_grad_norm, add warmup_steps), then rerun "
        f"(with --resume to continue from that checkpoint)."
    )


def _save(run_dir, state, installed, stepper: OptimiserStep, keep, writes: bool = True) -> None:
    """Called on every process (fsdp gathers the shards: a collective); `writes` on rank 0."""
    sharding = stepper.sharding
    with sharding.gathered():
        optimizer_state = sharding.optimizer_state(stepper.optimizer) if sharding.active else None
        if not writes:
            return
        for name, tensor in installed.state().items():  # never persist a poisoned model
            if tensor.is_floating_point() and not tensor.isfinite().all():
                raise DeltatuneError(f"trainable weight {name} is not finite at step {state.step}; "
                                     f"not saving a checkpoint. Lower train.lr.")
        save_checkpoint(run_dir, state, installed, stepper.optimizer, stepper.scheduler, keep=keep,
                        optimizer_state=optimizer_state)


def _resume(path, state: TrainState, stepper: OptimiserStep, train_cfg, log: MetricsLog) -> TrainState:
    """The optimiser and schedule of checkpoint `path` (its weights and RNG were loaded before
    the model was sharded: `load_checkpoint`)."""
    load_optimiser(path, stepper.optimizer, stepper.scheduler, stepper.sharding.load_optimizer_state)
    stepper.set_base_lr(train_cfg.lr, state.step)
    log.truncate_after(state.step)
    log.write("resume", step=state.step, checkpoint=str(path))
    say(f"resumed from {path} (step {state.step}, epoch {state.epoch}, batch {state.batch_index})")
    return state


def train(model, installed, train_set, val_set, cfg, run_dir, pad_id: int, resume_from=None, desc="train",
          objective: Objective = LM_OBJECTIVE) -> TrainResult:
    """Run the optimisation described by `cfg.train`; checkpoints and metrics go to `run_dir`."""
    run_dir = Path(run_dir)
    objective = objective_for(cfg.train, objective)  # packing, chunked CE, shared prefix (training.speed)
    group = distributed.join(cfg.train, cfg.model.device)
    n_user = user_examples(train_set)
    batch_size = train_batch_size(cfg.train, n_user)
    group.check_batch(batch_size)
    sampler = BucketedBatches(train_set, batch_size, seed=cfg.train.seed)
    budget = plan_budget(cfg.train, n_user, len(sampler), batch_size)
    tc, total_steps = resolved_train_config(cfg.train, budget), budget.total_steps
    say(f"budget: {total_steps} optimiser steps ({budget.epochs:.2f} epochs, batches of {budget.batch_size}), "
        f"warm-up {budget.warmup_steps}; "
        f"{budget.rule}")
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=group.is_main, tensorboard=cfg.logging.tensorboard)
    if resume_from is None and installed.hooks.prepare is not None:  # resumed: the checkpoint has it
        summary = installed.hooks.prepare(b for _, _, b in micro_batches(sampler, train_set, pad_id, 0, 0, objective.collate))
        say(f"method prepared on the training data: {summary}")
        log.write("prepare", step=0, **(summary or {}))
    # a resumed run's weights and RNG go in before fsdp shards the model (optimiser state after)
    state = load_checkpoint(resume_from, installed) if resume_from is not None else TrainState()
    sharding = fsdp.shard_for_run(model, installed, tc, group)
    stepper = OptimiserStep(model, installed, tc, total_steps, objective.loss_fn, objective.units, group, sharding)
    validator = Validator(model, val_set, installed, run_dir, tc, pad_id, cfg.model.dtype, log, objective,
                          writes=group.is_main, sharding=sharding, group=group)
    if resume_from is not None:
        _resume(resume_from, state, stepper, tc, log)
    else:
        log.write("budget", step=0, **budget.as_dict())
    if sharding.summary():
        log.write("sharding", step=state.step, **sharding.summary())
        say(f"sharded: {sharding.summary()}")
    speed = prepare_for_training(model, tc, cfg.model.dtype)  # after prepare / resume: the method is ready
    if speed:
        log.write("speed", step=state.step, **speed)
    stream = micro_batches(sampler, train_set, pad_id, state.epoch, state.batch_index, objective.collate,
                           group.shard)
    if objective.validate_start and resume_from is None and validator.val_set is not None and tc.eval_every:
        validator.validate(state)  # step 0: the start is a candidate for the best weights
    model.train()
    bar = progress_bar(total_steps, initial=state.step, desc=desc, enabled=group.is_main)
    stop_reason = "completed"
    meter = Throughput()
    while state.step < total_steps:
        t0 = time.perf_counter()
        window = [next(stream) for _ in range(tc.grad_accum)]
        batches = [b for _, _, b in window]
        try:
            result = stepper.step(batches, state.step + 1, cfg.model.dtype)
        except NonFinite as err:
            log.write("nan_stop", step=state.step + 1, **{err.field: err.value}, lr=err.lr)
            raise _non_finite(err, state.step + 1, run_dir) from None
        state.step += 1
        state.epoch, state.batch_index = window[-1][0], window[-1][1]
        seen = int(group.sum([sum(int(b["attention_mask"].sum()) for b in batches)])[0])
        elapsed = time.perf_counter() - t0
        meter.add(seen, elapsed)
        tokens_per_s = seen / max(elapsed, 1e-9)
        bar.update(1)
        show(bar, result.loss, result.lr, tokens_per_s)
        if state.step % tc.log_every == 0 or state.step == total_steps:
            epoch = state.epoch + state.batch_index / len(sampler)
            log.write("train", step=state.step, loss=result.loss, lr=result.lr, tokens_per_s=round(tokens_per_s, 1),
                      grad_norm=result.grad_norm, epoch=round(epoch, 4), tokens=result.tokens)
        stop = validator.validate(state) if validator.due(state.step) else False
        if tc.save_every and state.step % tc.save_every == 0:
            _save(run_dir, state, installed, stepper, tc.keep_checkpoints, writes=group.is_main)
        if stop:
            stop_reason = "early_stop"
            log.write("early_stop", step=state.step, best_val_loss=state.best_val_loss,
                      patience=tc.early_stopping_patience)
            say(f"early stopping at step {state.step}: no val-loss gain in {tc.early_stopping_patience} evals")
            break
    bar.close()
    val = validator.final(state)
    _save(run_dir, state, installed, stepper, tc.keep_checkpoints, writes=group.is_main)
    sharding.gather_for_good()  # fsdp: whole weights everywhere, so rank 0 can go on alone
    if not group.is_main:  # rank 0 evaluates and saves the method; the weights are the same
        model.eval()
        return TrainResult(state, total_steps, stop_reason, val, budget=budget)
    restored = validator.restore_best(state, val)
    usage = resources(meter)
    log.write("end", step=state.step, reason=stop_reason, val_loss=val, **usage)
    model.eval()
    if restored:
        return TrainResult(state, total_steps, stop_reason, restored["val_loss"], restored["step"], budget, usage)
    return TrainResult(state, total_steps, stop_reason, val, budget=budget, resources=usage)
