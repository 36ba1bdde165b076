"""The training loop shared by the `sft` and `pt` recipes, written out top to bottom.

    result = train(model, train_set, val_set, cfg, run_dir, pad_id, resume_from=None)

One optimiser step = `grad_accum` micro-batches of `batch_size` examples. The data is one long
stream of micro-batches (epoch 0's bucketed order, then epoch 1's, ...), so a step may cross an
epoch boundary and the position of the next micro-batch, (epoch, batch_index), is all a resume
needs to replay the same data. Each step:

    1. gradients of  sum(token losses) / (labelled tokens in the whole step)   (so 2 x 4 == 8)
    2. non-finite loss or gradient norm -> stop (the last checkpoint is kept; never save NaNs)
    3. clip, AdamW step, schedule step
    4. log every `log_every`, validate every `eval_every` (early stopping), checkpoint every
       `save_every`; at the end validate and checkpoint once more.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from deltatune.data import BucketedBatches, collate
from deltatune.errors import DeltatuneError
from deltatune.eval.perplexity import mean_token_loss
from deltatune.losses.lm import model_lm_loss
from deltatune.models.device import autocast_for, model_device
from deltatune.training.checkpoint import (TrainState, best_weights, latest_checkpoint, load_best, load_checkpoint,
                                           save_best, save_checkpoint)
from deltatune.training.metrics import MetricsLog
from deltatune.training.optim import build_optimizer, build_scheduler
from deltatune.training.progress import progress_bar, say, show


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    total_steps: int
    stop_reason: str  # "completed" | "early_stop"
    val_loss: float | None  # of the weights the model holds on return
    restored_step: int | None = None  # the step whose (best) weights were put back, if any


def total_steps_for(train_cfg, batches_per_epoch: int) -> int:
    """`max_steps` if set, else enough steps to see `epochs` x the data (at least one)."""
    if train_cfg.max_steps:
        return train_cfg.max_steps
    return max(1, math.ceil(train_cfg.epochs * batches_per_epoch / train_cfg.grad_accum))


def micro_batches(sampler: BucketedBatches, dataset, pad_id: int, epoch: int, index: int):
    """Yield (next_epoch, next_index, batch) forever, starting at (epoch, index)."""
    while True:
        order = sampler.batches(epoch)
        for i in range(index, len(order)):
            batch = collate([dataset[j] for j in order[i]], pad_id)
            nxt = (epoch, i + 1) if i + 1 < len(order) else (epoch + 1, 0)
            yield nxt[0], nxt[1], batch
        epoch, index = epoch + 1, 0


def accumulate_gradients(model, batches: list[dict], dtype: str = "float32") -> tuple[float, int]:
    """Backward over micro-batches so the gradient is that of one batch holding all of them.

    Each micro-batch's mean loss is weighted by its share of the step's labelled tokens.
    Batches move to the model's device; forward passes run under autocast in `dtype`.
    Returns (token-weighted mean loss, labelled tokens); stops early on a non-finite loss.
    """
    device = model_device(model)
    total = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    loss_sum = 0.0
    for batch in batches:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast_for(dtype, device):
            loss, n = model_lm_loss(model, batch)
        if n == 0:
            continue
        if not torch.isfinite(loss):
            return float(loss), total
        (loss * (n / total)).backward()
        loss_sum += loss.item() * n
    return (loss_sum / total if total else 0.0), total


def validation_loss(model, dataset, batch_size: int, pad_id: int, dtype: str = "float32") -> float:
    """Mean loss over every labelled token of `dataset` (eval mode, no dropout, autocast as in training)."""
    with autocast_for(dtype, model_device(model)):
        return mean_token_loss(model, dataset, pad_id, batch_size, desc="val loss")[0]


def _non_finite(what: str, value: float, step: int, run_dir: Path, lr: float) -> DeltatuneError:
    ckpt = latest_checkpoint(run_dir)
    kept = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint had been written yet"
    return DeltatuneError(
        f"{what} became {value} at optimiser step {step} (lr {lr:.3g}); training stopped and "
        f"{kept}. Lower train.lr (and/or set train.max_grad_norm, add warmup_steps), then rerun "
        f"(with --resume to continue from that checkpoint)."
    )


def _save(run_dir, state, model, optimizer, scheduler, keep) -> None:
    for name, p in model.named_parameters():  # never persist a poisoned model
        if p.requires_grad and not torch.isfinite(p).all():
            raise DeltatuneError(f"trainable weight {name} is not finite at step {state.step}; not saving a checkpoint. Lower train.lr.")
    save_checkpoint(run_dir, state, model, optimizer, scheduler, keep=keep)


def _update_early_stop(state: TrainState, val: float, patience: int | None) -> bool:
    """Record a validation loss; True when `patience` evals in a row brought no improvement."""
    if state.best_val_loss is None or val < state.best_val_loss:
        state.best_val_loss, state.bad_evals = val, 0
    else:
        state.bad_evals += 1
    return patience is not None and state.bad_evals >= patience


def _resume(path, model, optimizer, scheduler, train_cfg, log: MetricsLog) -> TrainState:
    state = load_checkpoint(path, model, optimizer, scheduler)
    # the configured lr wins over the saved one (e.g. lowered after a NaN stop); unchanged
    # config -> identical values, so an exact resume stays exact
    scheduler.base_lrs = [train_cfg.lr for _ in scheduler.base_lrs]
    for group, factor in zip(optimizer.param_groups, [f(state.step) for f in scheduler.lr_lambdas]):
        group["lr"] = train_cfg.lr * factor
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
    log.truncate_after(state.step)
    log.write("resume", step=state.step, checkpoint=str(path))
    say(f"resumed from {path} (step {state.step}, epoch {state.epoch}, batch {state.batch_index})")
    return state


def train(model, train_set, val_set, cfg, run_dir, pad_id: int, resume_from=None, desc="train") -> TrainResult:
    """Run the optimisation described by `cfg.train`; checkpoints and metrics go to `run_dir`."""
    tc, run_dir = cfg.train, Path(run_dir)
    sampler = BucketedBatches(train_set, tc.batch_size, seed=tc.seed)
    total_steps = total_steps_for(tc, len(sampler))
    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc.schedule, tc.warmup_steps, total_steps)
    log = MetricsLog(run_dir / "metrics.jsonl")
    state = TrainState()
    if resume_from is not None:
        state = _resume(resume_from, model, optimizer, scheduler, tc, log)
    stream = micro_batches(sampler, train_set, pad_id, state.epoch, state.batch_index)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    bar = progress_bar(total_steps, initial=state.step, desc=desc)
    stop_reason, val, val_step = "completed", None, None
    while state.step < total_steps:
        t0 = time.perf_counter()
        window = [next(stream) for _ in range(tc.grad_accum)]
        batches = [b for _, _, b in window]
        lr = optimizer.param_groups[0]["lr"]
        loss, n_tokens = accumulate_gradients(model, batches, cfg.model.dtype)
        if not math.isfinite(loss):
            log.write("nan_stop", step=state.step + 1, loss=loss, lr=lr)
            raise _non_finite("the training loss", loss, state.step + 1, run_dir, lr)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.max_grad_norm or float("inf")))
        if not math.isfinite(grad_norm):
            log.write("nan_stop", step=state.step + 1, loss=loss, grad_norm=grad_norm, lr=lr)
            raise _non_finite("the gradient norm", grad_norm, state.step + 1, run_dir, lr)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.epoch, state.batch_index = window[-1][0], window[-1][1]
        seen = sum(int(b["attention_mask"].sum()) for b in batches)
        tokens_per_s = seen / max(time.perf_counter() - t0, 1e-9)
        bar.update(1)
        show(bar, loss, lr, tokens_per_s)
        if state.step % tc.log_every == 0 or state.step == total_steps:
            epoch = state.epoch + state.batch_index / len(sampler)
            log.write("train", step=state.step, loss=loss, lr=lr, tokens_per_s=round(tokens_per_s, 1),
                      grad_norm=grad_norm, epoch=round(epoch, 4), tokens=n_tokens)
        stop = False
        if val_set is not None and tc.eval_every and state.step % tc.eval_every == 0:
            val, val_step = validation_loss(model, val_set, tc.batch_size, pad_id, cfg.model.dtype), state.step
            stop = _update_early_stop(state, val, tc.early_stopping_patience)
            if tc.restore_best and state.bad_evals == 0:  # a new best
                save_best(run_dir, model, state.step, val)
            log.write("val", step=state.step, val_loss=val, best_val_loss=state.best_val_loss)
            say(f"step {state.step}: val loss {val:.4f} (best {state.best_val_loss:.4f})")
        if tc.save_every and state.step % tc.save_every == 0:
            _save(run_dir, state, model, optimizer, scheduler, tc.keep_checkpoints)
        if stop:
            stop_reason = "early_stop"
            log.write("early_stop", step=state.step, best_val_loss=state.best_val_loss,
                      patience=tc.early_stopping_patience)
            say(f"early stopping at step {state.step}: no val-loss gain in {tc.early_stopping_patience} evals")
            break
    bar.close()
    if val_set is not None and val_step != state.step:
        val = validation_loss(model, val_set, tc.batch_size, pad_id, cfg.model.dtype)
        _update_early_stop(state, val, None)
        log.write("val", step=state.step, val_loss=val, best_val_loss=state.best_val_loss)
    _save(run_dir, state, model, optimizer, scheduler, tc.keep_checkpoints)
    restored = _restore_best(model, run_dir, state.step, val, log) if tc.restore_best and val is not None else None
    log.write("end", step=state.step, reason=stop_reason, val_loss=val)
    model.eval()
    if restored:
        return TrainResult(state, total_steps, stop_reason, restored["val_loss"], restored["step"])
    return TrainResult(state, total_steps, stop_reason, val)


def _restore_best(model, run_dir, step: int, last_val: float, log: MetricsLog) -> dict | None:
    """Put back the lowest-val-loss weights when they beat the last ones (after the final
    checkpoint was written, so --resume still continues from the last weights)."""
    kept = best_weights(run_dir)
    if kept is None or kept[1]["step"] == step or kept[1]["val_loss"] >= last_val:
        return None
    load_best(kept[0], model)
    log.write("restore_best", step=step, best_step=kept[1]["step"], val_loss=kept[1]["val_loss"], last_val_loss=last_val)
    say(f"restored the best weights (step {kept[1]['step']}, val loss {kept[1]['val_loss']:.4f}; "
        f"the last step's was {last_val:.4f})")
    return kept[1]
