"""Sequence classification: an encoder (MiniLM, BERT) or a causal LM plus a fresh K-way head,
trained with any method of the catalogue on {text, label} rows.

    deltatune train configs/minilm/cls_lora.yaml [--resume]
    deltatune generate runs/cls_lora "where is my parcel?"        # -> delivery_status  0.97
    deltatune serve --classifier intents=runs/cls_lora            # POST /v1/classify

Reads top to bottom: seed -> backbone (an encoder loads bare, a decoder as the other recipes
load it) -> labelled splits (label names found in data.train; a row without a label, or a
val / test label data.train never shows, is an error naming file:line, before anything is
written) -> the method (its default Llama module names translated for a BERT-style encoder,
deltatune.classify.names) + a fresh `classifier_head` (deltatune.models.heads), which always
trains -> run dir + labels.json -> the untrained model's numbers -> the training loop with
cross-entropy over rows -> the adapter and `classifier_head.safetensors` -> accuracy, macro-F1
and the majority-class rate on data.val / data.test -> eval.json. The head trains,
checkpoints and resumes with the method's weights.
"""

from __future__ import annotations

import dataclasses
import inspect
from functools import partial
from pathlib import Path

from deltatune.atomic import write_jsonl_atomic
from deltatune.classify.data import load_cls_splits, majority_label, measured_splits
from deltatune.classify.labels import write_labels
from deltatune.classify.metrics import evaluate_split, summary_line
from deltatune.classify.model import HEAD, HEAD_FILE, load_backbone, resolve_pooling
from deltatune.classify.names import encoder_method_config
from deltatune.classify.objective import cls_objective
from deltatune.data.sources import public_fields
from deltatune.methods.core import apply_method, save_adapter
from deltatune.models.heads import WithHeads, attach_linear_head, save_head
from deltatune.recipes import common
from deltatune.training.budget import validation_batch_size
from deltatune.training.loop import train
from deltatune.training.progress import say
from deltatune.training.rundir import prepare_run_dir


def _measure(model, head, splits, majority: int, pooling: str, cfg, pad_id) -> dict:
    size = validation_batch_size(cfg.train)
    return {name: evaluate_split(model, head, ds, splits.labels.names, majority, pooling, size, pad_id)
            for name, ds in measured_splits(splits).items()}


def _with_objective_loss(installed, loss_fn):
    """A method's data-dependent `prepare` hook (FISH Mask's Fisher) fed this recipe's loss
    when it takes one, instead of its language-modelling default."""
    prepare = installed.hooks.prepare
    if prepare is not None and "loss_fn" in inspect.signature(prepare).parameters:
        installed.hooks = dataclasses.replace(installed.hooks, prepare=partial(prepare, loss_fn=loss_fn))
    return installed


def run(cfg, resume: bool = False) -> Path:
    """Train a classifier as `cfg` says; returns the run dir."""
    common.seed_everything(cfg.train.seed)
    group = common.setup_process(cfg)
    model, tokenizer, encoder = group.main_first(lambda: load_backbone(cfg))
    splits = load_cls_splits(cfg, tokenizer)
    common.describe_dataset("train rows", splits.train)
    say(f"{len(splits.labels)} labels: {', '.join(splits.labels.names)}")
    pooling = resolve_pooling(cfg.classify.pooling, encoder)
    method_cfg = encoder_method_config(cfg.method, model) if encoder else cfg.method
    if method_cfg is not cfg.method:
        changed = {k: v for k, v in method_cfg.model_dump().items() if v != getattr(cfg.method, k)}
        say(f"method defaults in this encoder's module names: {changed}")
        cfg = cfg.model_copy(update={"method": method_cfg})

    common.seed_everything(cfg.train.seed)
    installed = apply_method(model, cfg.method, tokenizer=tokenizer)
    head = attach_linear_head(model, HEAD, len(splits.labels), seed=cfg.train.seed)
    ratio = cfg.classify.head_lr_ratio
    installed = WithHeads(installed, {HEAD: head}, head_lr_ratio=None if ratio == 1.0 else ratio)
    objective = cls_objective(head, pooling)
    installed = _with_objective_loss(installed, objective.loss_fn)

    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    pad_id = tokenizer.pad_token_id
    if not group.is_main:  # the other processes of a torchrun launch only train; rank 0 writes
        train(model, installed, splits.train, splits.val, cfg, run_dir, pad_id, resume_from, objective=objective)
        return run_dir
    majority = majority_label(splits.train)
    write_labels(run_dir, splits.labels, text_field=cfg.classify.text_field, label_field=cfg.classify.label_field,
                 pooling=pooling, majority_label=splits.labels.names[majority])
    if splits.val_records:
        write_jsonl_atomic(run_dir / common.HELDOUT_VAL, [public_fields(r) for r in splits.val_records])
    before = common.read_before(run_dir) if resume_from else None
    if cfg.eval.before_after and before is None:
        say("measuring the untrained classifier (base model, fresh head) ...")
        before = common.measure_base(model, lambda: _measure(model, head, splits, majority, pooling, cfg, pad_id))
    trainable, total = common.print_parameter_counts(model)
    result = train(model, installed, splits.train, splits.val, cfg, run_dir, pad_id, resume_from, desc="cls",
                   objective=objective)

    save_adapter(model, cfg.method, run_dir / "adapter", common.base_model_path(cfg))
    save_head(head, run_dir / HEAD_FILE, kind="classifier", pooling=pooling, labels=list(splits.labels.names))
    say("evaluating the classifier ...")
    after = _measure(model, head, splits, majority, pooling, cfg, pad_id)
    for split, metrics in after.items():
        print(summary_line(split, metrics, (before or {}).get(split)), flush=True)
    extra = {**common.training_summary(result, trainable, total), "data": splits.notes,
             "labels": list(splits.labels.names), "pooling": pooling}
    common.finish_report(run_dir, before, after, extra, model)
    return run_dir
