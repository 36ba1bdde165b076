"""Continued pre-training on raw text: every token is a label, same loop as `sft`.

    deltatune train configs/smollm2/pt_lora.yaml [--resume]      # recipe: pt, data.format: text

Records are raw text (`text` field, or lines of a .txt-like JSONL); `data.pack: true`
concatenates them and cuts `max_length` blocks (no padding waste). Reads top to bottom like
`sft`: seed -> model -> data (errors before anything is written) -> run dir -> apply method
-> `training.loop.train` -> save adapter -> validation loss / perplexity -> eval.json.
"""

from __future__ import annotations

import math
from pathlib import Path

from deltatune.data import build_text_dataset, load_records
from deltatune.errors import DeltatuneError
from deltatune.methods.core import apply_method, save_adapter
from deltatune.recipes import common
from deltatune.training.budget import validation_batch_size
from deltatune.training.loop import train, validation_loss
from deltatune.training.progress import say
from deltatune.training.rundir import prepare_run_dir


def load_datasets(cfg, tokenizer):
    train_set = build_text_dataset(load_records(cfg.data.train), tokenizer, cfg.data)
    if len(train_set) == 0:
        raise DeltatuneError(f"data.train {cfg.data.train}: no text blocks after tokenisation")
    val_set = build_text_dataset(load_records(cfg.data.val), tokenizer, cfg.data) if cfg.data.val else None
    return train_set, val_set


def _loss_report(model, val_set, cfg, pad_id) -> dict:
    if val_set is None:
        return {}
    loss = validation_loss(model, val_set, validation_batch_size(cfg.train), pad_id)
    return {"val": {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}}


def run(cfg, resume: bool = False) -> Path:
    """Continue pre-training `cfg.model` on the raw text of `cfg.data`; returns the run dir."""
    common.seed_everything(cfg.train.seed)
    group = common.setup_process(cfg)
    model, tokenizer = group.main_first(lambda: common.load_for_training(cfg))
    train_set, val_set = load_datasets(cfg, tokenizer)
    common.describe_dataset("train", train_set)

    common.seed_everything(cfg.train.seed)  # the method's init: the same whatever ran before
    # install before anything is written: a config that does not fit the model (targets
    # matching nothing, an init_text too long) fails here with nothing on disk
    installed = apply_method(model, cfg.method, tokenizer=tokenizer)

    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    if not group.is_main:  # the other processes of a torchrun launch only train; rank 0 writes
        train(model, installed, train_set, val_set, cfg, run_dir, tokenizer.pad_token_id, resume_from)
        return run_dir
    before = common.read_before(run_dir) if resume_from else None
    if cfg.eval.before_after and before is None and val_set is not None:
        before = common.measure_base(model, lambda: _loss_report(model, val_set, cfg, tokenizer.pad_token_id))
    common.print_parameter_counts(model)
    result = train(model, installed, train_set, val_set, cfg, run_dir, tokenizer.pad_token_id, resume_from, desc="pt")

    save_adapter(model, cfg.method, run_dir / "adapter", common.base_model_path(cfg))
    say("evaluating ...")
    after = _loss_report(model, val_set, cfg, tokenizer.pad_token_id)
    extra = {"steps": result.state.step, "stop_reason": result.stop_reason, "final_val_loss": result.val_loss,
             "restored_best_step": result.restored_step, "resources": result.resources}
    common.finish_report(run_dir, before, after, extra, model)
    return run_dir
