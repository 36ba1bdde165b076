"""The RL training loop shared by `recipe: ppo` and `recipe: grpo`.

    result = run_rl(model, installed, tokenizer, prompts, cfg, run_dir, algorithm, reward, reference, resume_from)

One iteration (= one `step` in metrics.jsonl, checkpoints and `train.max_steps`):

    prompts    rl.prompts_per_step rows (seeded order; the same on a resumed run)
    rollout    rl.num_samples sampled completions each (seeded per completion)
    reward     rl.reward scores every completion
    score      old / reference log-probs (and values), one no-grad pass
    advantages the algorithm's own (PPO: KL-shaped rewards + GAE; GRPO: group-normalised)
    update     rl.ppo_epochs optimiser steps, each over the whole rollout in micro-batches of
               train.batch_size rows (OptimiserStep: token-weighted accumulation, clipping,
               the NaN guard, the schedule and the method's hooks, as in every recipe)

Forwards run in eval mode (no dropout: the first epoch's ratio is exactly 1). Checkpoints hold
the method (and value head), optimiser, scheduler, RNG and the KL controller, so `--resume`
reproduces the uninterrupted run. Each iteration logs mean reward, KL, entropy, clip fraction,
response length (and value loss) to metrics.jsonl; rl.png plots them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from deltatune.errors import DeltatuneError
from deltatune.losses.rl import AdaptiveKLController, FixedKLController
from deltatune.rl.rollout import Rollout, response_mask, sample_rollout, score_rollout
from deltatune.rl.prompts import iteration_prompts
from deltatune.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from deltatune.training.metrics import MetricsLog
from deltatune.training.progress import progress_bar, say
from deltatune.training.step import NonFinite, OptimiserStep

PER_ROW = ("input_ids", "attention_mask", "labels")


@dataclass
class Algorithm:
    """What a recipe brings to the loop.

    advantages(rollout, kl_coef) -> stats: put the (N, T-1) tensors its loss reads into
        rollout.tensors (advantages, returns ...); return numbers to log
    loss(model, batch) -> (loss, units, stats): one micro-batch (the rollout's per-row tensors
        sliced), `units` its response tokens
    """

    name: str
    advantages: Callable[[Rollout, float], dict]
    loss: Callable[[torch.nn.Module, dict], tuple[torch.Tensor, int, dict]]
    value_head: torch.nn.Module | None = None
    uses_reference: bool = True


@dataclass
class RLResult:
    state: TrainState
    iterations: int


def planned_iterations(train_cfg, n_prompts: int, per_step: int) -> int:
    """train.max_steps, else enough iterations for train.epochs passes over the prompts (auto: 1)."""
    if train_cfg.max_steps:
        return train_cfg.max_steps
    epochs = 1.0 if train_cfg.epochs == "auto" else float(train_cfg.epochs)
    return max(1, math.ceil(epochs * n_prompts / per_step))


def update_batch_size(train_cfg) -> int:
    """Rows per micro-batch of the update: train.batch_size (`auto`, sized for SFT sets, means 8)."""
    return 8 if train_cfg.batch_size == "auto" else train_cfg.batch_size


def kl_controller(rl_cfg):
    if rl_cfg.adaptive_kl:
        return AdaptiveKLController(rl_cfg.kl_coef, rl_cfg.kl_target, rl_cfg.kl_horizon)
    return FixedKLController(rl_cfg.kl_coef)


def _micro_batches(rollout: Rollout, size: int, order: list[int]) -> list[dict]:
    per_row = {k: getattr(rollout, k) for k in PER_ROW}
    per_row.update({k: v for k, v in rollout.tensors.items() if torch.is_tensor(v) and v.dim() >= 1})
    return [{k: v[order[i:i + size]] for k, v in per_row.items()} for i in range(0, len(order), size)]


def _update(stepper: OptimiserStep, rollout: Rollout, cfg, state: TrainState, collected: list) -> dict:
    """rl.ppo_epochs optimiser steps over the rollout; the mean of the loss's stats."""
    n = rollout.input_ids.shape[0]
    losses, norms = [], []
    for epoch in range(cfg.rl.ppo_epochs):
        order = list(range(n))
        random.Random(cfg.train.seed * 7919 + state.step * 131 + epoch).shuffle(order)
        result = stepper.step(_micro_batches(rollout, update_batch_size(cfg.train), order),
                              state.step * cfg.rl.ppo_epochs + epoch + 1, cfg.model.dtype)
        losses.append(result.loss)
        norms.append(result.grad_norm)
    keys = {k for stats in collected for k in stats}
    # the loss's own numbers are over the update's forwards: prefixed where a name would clash
    stats = {("update_" + k if k == "kl" else k): sum(s[k] for s in collected if k in s) /
             max(1, sum(k in s for s in collected)) for k in keys}
    collected.clear()
    return {"loss": sum(losses) / len(losses), "grad_norm": sum(norms) / len(norms), **stats}


def _row_stats(rollout: Rollout, kl_coef: float) -> dict:
    scores = rollout.scores
    mask = rollout.mask
    out = {"reward_mean": float(scores.mean()), "reward_std": float(scores.std(unbiased=False)),
           "response_length": sum(rollout.lengths) / len(rollout.lengths), "entropy": rollout.tensors["entropy"],
           "kl_coef": kl_coef}
    if "ref_logp" in rollout.tensors:  # per-sequence KL (sum over the reply's tokens), k1
        diff = (rollout.tensors["old_logp"] - rollout.tensors["ref_logp"]) * mask
        out["kl"] = float(diff.sum(-1).mean())
    return out


def run_rl(model, installed, tokenizer, prompts: list[dict], cfg, run_dir: Path, algorithm: Algorithm,
           reward, reference, resume_from=None) -> RLResult:
    """Iterate rollout -> reward -> advantages -> update until train.max_steps iterations are done."""
    run_dir = Path(run_dir)
    iterations = planned_iterations(cfg.train, len(prompts), cfg.rl.prompts_per_step)
    collected: list[dict] = []

    def loss_fn(m, batch):
        loss, units, stats = algorithm.loss(m, batch)
        collected.append(stats)
        return loss, units

    stepper = OptimiserStep(model, installed, cfg.train, iterations * cfg.rl.ppo_epochs, loss_fn,
                            units=lambda b: int(response_mask(b["labels"]).sum()))
    controller = kl_controller(cfg.rl)
    log = MetricsLog(run_dir / "metrics.jsonl", tensorboard=cfg.logging.tensorboard)
    state = TrainState()
    if resume_from is not None:
        state = load_checkpoint(resume_from, installed, stepper.optimizer, stepper.scheduler)
        stepper.set_base_lr(cfg.train.lr, state.step * cfg.rl.ppo_epochs)
        controller.load_state_dict(state.extra["kl"])
        log.truncate_after(state.step)
        say(f"resumed from {resume_from} (iteration {state.step})")
    else:
        log.write("budget", step=0, iterations=iterations, optimiser_steps=iterations * cfg.rl.ppo_epochs)
    say(f"{algorithm.name}: {iterations} iterations of {cfg.rl.prompts_per_step} prompts x {cfg.rl.num_samples} "
        f"samples, {cfg.rl.ppo_epochs} update epochs each")
    bar = progress_bar(iterations, initial=state.step, desc=algorithm.name)
    while state.step < iterations:
        records = iteration_prompts(prompts, state.step, cfg.rl.prompts_per_step, cfg.train.seed)
        rollout = sample_rollout(model, tokenizer, records, cfg, state.step)
        rollout.scores = torch.tensor(reward(rollout.records, rollout.turns, rollout.texts), dtype=torch.float32)
        score_rollout(model, rollout, reference if algorithm.uses_reference else None, algorithm.value_head)
        row = {**_row_stats(rollout, controller.value), **algorithm.advantages(rollout, controller.value)}
        model.eval()  # no dropout in the update either (see the module docstring)
        try:
            row.update(_update(stepper, rollout, cfg, state, collected))
        except NonFinite as err:
            raise DeltatuneError(f"{err.what} became {err.value} at iteration {state.step + 1}; lower train.lr "
                                 f"or rl.kl_coef and rerun (--resume continues from the last checkpoint)") from None
        if "kl" in row:
            controller.update(row["kl"], rollout.input_ids.shape[0])
        state.step += 1
        state.extra = {"kl": controller.state_dict()}
        log.write("rl", step=state.step, **{k: round(v, 6) for k, v in row.items()})
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row.get('kl', 0.0):.3f}", refresh=False)
        if cfg.train.save_every and state.step % cfg.train.save_every == 0:
            save_checkpoint(run_dir, state, installed, stepper.optimizer, stepper.scheduler, keep=cfg.train.keep_checkpoints)
    bar.close()
    save_checkpoint(run_dir, state, installed, stepper.optimizer, stepper.scheduler, keep=cfg.train.keep_checkpoints)
    log.write("end", step=state.step, reason="completed")
    return RLResult(state, iterations)
