"""Validation as a building block: the held-out loss every `eval_every` steps, early stopping,
the best weights kept on disk, and putting them back at the end.

    validator = Validator(val_set, installed, run_dir, cfg.train, pad_id, dtype, log)
    stop = validator.validate(state)             # after an optimiser step: True -> stop early
    restored = validator.restore_best(state, last_val)   # {"step", "val_loss"} or None

The loss is the recipe objective's `val_loss` (deltatune.training.objective); by default
`deltatune.eval.perplexity.mean_token_loss` — the evaluator's token-weighted loss,
run in eval mode (no dropout) under the same autocast as training — so the number logged here
is the number `deltatune eval` reports.
"""

from __future__ import annotations

from pathlib import Path

from deltatune.errors import DeltatuneError
from deltatune.eval.perplexity import mean_token_loss, token_loss_sum
from deltatune.models.device import autocast_for, model_device
from deltatune.training.checkpoint import TrainState, best_weights, load_best, save_best
from deltatune.training.metrics import MetricsLog
from deltatune.training.progress import say


def validation_loss(model, dataset, batch_size: int, pad_id: int, dtype: str = "float32", split=None) -> float:
    """Mean loss over every labelled token of `dataset` (eval mode, autocast as in training).

    `split`: a `ProcessGroup` whose processes share the work — each measures every world-th
    example (of the length-sorted set, so the shares pad alike) and the loss sums and token
    counts are added over the processes before dividing: the same number, 1/world of the time.
    Only for replicated models (ddp): an fsdp-sharded forward needs every process in every
    batch, so there each measures the whole set."""
    if split is None or split.world == 1:
        with autocast_for(dtype, model_device(model)):
            return mean_token_loss(model, dataset, pad_id, batch_size, desc="val loss")[0]
    examples = sorted(getattr(dataset, "examples", dataset), key=lambda e: len(e["input_ids"]))
    mine = split.shard(examples)
    loss_sum, tokens = 0.0, 0
    if mine:
        with autocast_for(dtype, model_device(model)):
            loss_sum, tokens, _ = token_loss_sum(model, mine, pad_id, batch_size, desc="val loss")
    loss_sum, tokens = split.sum([loss_sum, tokens])
    if tokens == 0:
        raise DeltatuneError(f"validation: no labelled tokens in {len(examples)} examples (every label is -100)")
    return loss_sum / tokens


def record_val(state: TrainState, val: float, patience: int | None) -> bool:
    """Record a validation loss; True when `patience` evals in a row brought no improvement."""
    if state.best_val_loss is None or val < state.best_val_loss:
        state.best_val_loss, state.bad_evals = val, 0
    else:
        state.bad_evals += 1
    return patience is not None and state.bad_evals >= patience


class Validator:
    """Held-out loss, early stopping and best-weights bookkeeping for one run (see module docstring)."""

    def __init__(self, model, val_set, installed, run_dir: Path, train_cfg, pad_id: int, dtype: str, log: MetricsLog,
                 objective=None, writes: bool = True, sharding=None, group=None):
        from deltatune.training.fsdp import NoSharding

        self.model, self.val_set, self.installed = model, val_set, installed
        self.writes = writes  # False on every process but rank 0: each measures, one keeps the weights
        self.sharding = sharding or NoSharding()  # fsdp: every process gathers, rank 0 keeps them
        # ddp: the processes split the LM validation loss between them (see validation_loss)
        self.split = group if isinstance(self.sharding, NoSharding) else None
        self.run_dir, self.cfg, self.pad_id, self.dtype, self.log = Path(run_dir), train_cfg, pad_id, dtype, log
        self.objective = objective  # None: the LM loss (deltatune.training.objective)
        self.last: tuple[int, float] | None = None  # (step, val loss) of the latest validation

    def due(self, step: int) -> bool:
        return self.val_set is not None and bool(self.cfg.eval_every) and step % self.cfg.eval_every == 0

    def validate(self, state: TrainState) -> bool:
        """Measure, log, keep the weights when best; True when early stopping says stop."""
        val = self._measure()
        self.last = (state.step, val)
        stop = record_val(state, val, self.cfg.early_stopping_patience)
        if self.cfg.restore_best and state.bad_evals == 0:  # a new best (the same verdict on every process)
            with self.sharding.gathered():
                if self.writes:
                    save_best(self.run_dir, self.installed, state.step, val)
        self.log.write("val", step=state.step, val_loss=val, best_val_loss=state.best_val_loss)
        say(f"step {state.step}: val loss {val:.4f} (best {state.best_val_loss:.4f})")
        return stop

    def final(self, state: TrainState) -> float | None:
        """The val loss of the weights at the end of the loop (measured unless just measured)."""
        if self.val_set is None:
            return None
        if self.last is not None and self.last[0] == state.step:
            return self.last[1]
        val = self._measure()
        record_val(state, val, None)
        self.log.write("val", step=state.step, val_loss=val, best_val_loss=state.best_val_loss)
        return val

    def _measure(self) -> float:
        if self.objective is None:
            return validation_loss(self.model, self.val_set, self.cfg.batch_size, self.pad_id, self.dtype,
                                   split=self.split)
        return self.objective.val_loss(self.model, self.val_set, self.objective, self.cfg.batch_size, self.pad_id,
                                       self.dtype)

    def restore_best(self, state: TrainState, last_val: float | None) -> dict | None:
        """Put back the lowest-val-loss weights when they beat the last ones (call after the
        final checkpoint, so --resume still continues from the last weights)."""
        if not self.cfg.restore_best or last_val is None:
            return None
        kept = best_weights(self.run_dir)
        if kept is None or kept[1]["step"] == state.step or kept[1]["val_loss"] >= last_val:
            return None
        load_best(kept[0], self.installed)
        self.log.write("restore_best", step=state.step, best_step=kept[1]["step"], val_loss=kept[1]["val_loss"],
                       last_val_loss=last_val)
        say(f"restored the best weights (step {kept[1]['step']}, val loss {kept[1]['val_loss']:.4f}; "
            f"the last step's was {last_val:.4f})")
        return kept[1]
