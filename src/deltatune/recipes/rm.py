"""Reward modelling: the LM plus a scalar head on the last token, trained on ranked answer pairs.

    deltatune train configs/smollm2/rm_lora.yaml [--resume]
    deltatune score runs/rm "Who founded Acme?" "Acme was founded by ..."     # a reward

Reads top to bottom: seed -> model -> pairs (prompt / chosen / rejected; errors name file:line
before anything is written) -> method + a fresh `reward_head` (deltatune.models.heads) ->
run dir -> the untrained model's held-out pairwise accuracy -> the head fitted as a linear
probe on the training pairs (preference.head_init: probe, deltatune.preference.head_init) ->
the training loop with the
Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) (Bradley & Terry 1952; Ouyang et al.
2022) -> the adapter and `reward_head.safetensors` -> held-out `pairwise_accuracy` and mean
margin on data.val / data.test -> eval.json. The head trains, checkpoints and resumes with the
method's weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from deltatune.atomic import write_jsonl_atomic, write_text_atomic
from deltatune.methods.core import apply_method, save_adapter
from deltatune.models.heads import WithHeads, attach_scalar_head, save_head
from deltatune.preference.head_init import fit_reward_head
from deltatune.preference.metrics import rm_metrics
from deltatune.preference.objectives import rm_objective
from deltatune.preference.reward_model import HEAD, HEAD_FILE  # the head and its file in the run dir
from deltatune.preference.splits import load_pair_splits, measured_splits
from deltatune.recipes import common
from deltatune.training.budget import validation_batch_size
from deltatune.training.loop import train
from deltatune.training.progress import say
from deltatune.training.rundir import prepare_run_dir

PROBE_FILE = "head_probe.json"  # the fitted probe's numbers, kept for a resumed run's eval.json


def _measure(model, head, splits, cfg, pad_id) -> dict:
    size = validation_batch_size(cfg.train)
    return {name: rm_metrics(model, head, ds, size, pad_id, cfg.preference)
            for name, ds in measured_splits(splits).items()}


def _start_head(model, head, splits, cfg, pad_id, run_dir: Path, resume_from, is_main: bool) -> dict | None:
    """preference.head_init: probe -> fit the head as a linear probe on the training pairs (a
    fresh run only: a resumed run's head is in its checkpoint) and, on rank 0, keep its numbers
    (with its held-out accuracy: what fine-tuning must beat) in PROBE_FILE. Returns them, or
    None for a random head."""
    path = run_dir / PROBE_FILE
    if cfg.preference.head_init != "probe" or resume_from is not None:
        return json.loads(path.read_text()) if path.is_file() else None
    probe = fit_reward_head(model, head, splits.train, cfg.preference.reward_pooling, validation_batch_size(cfg.train),
                            pad_id, progress=is_main)
    say(f"reward head fitted as a linear probe on {probe['pairs']} training pairs "
        f"(train pairwise accuracy {probe['probe_train_accuracy']:.1%}); fine-tuning from it")
    if is_main:
        if cfg.eval.before_after:
            probe["held_out"] = _measure(model, head, splits, cfg, pad_id)
        write_text_atomic(path, json.dumps(probe) + "\n")
    return probe


def run(cfg, resume: bool = False) -> Path:
    """Train a reward model as `cfg` says; returns the run dir."""
    common.seed_everything(cfg.train.seed)
    group = common.setup_process(cfg)
    model, tokenizer = group.main_first(lambda: common.load_for_training(cfg))
    splits = load_pair_splits(cfg, tokenizer)
    common.describe_dataset("train pairs", splits.train)

    common.seed_everything(cfg.train.seed)
    installed = apply_method(model, cfg.method, tokenizer=tokenizer)
    head = attach_scalar_head(model, HEAD, seed=cfg.train.seed)
    ratio = cfg.preference.head_lr_ratio
    installed = WithHeads(installed, {HEAD: head}, head_lr_ratio=None if ratio == 1.0 else ratio)

    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    pad_id = tokenizer.pad_token_id
    before = common.read_before(run_dir) if resume_from else None
    if group.is_main:
        if splits.val_records:
            write_jsonl_atomic(run_dir / common.HELDOUT_VAL, splits.val_records)
        if cfg.eval.before_after and before is None:
            say("measuring the untrained reward model ...")
            before = common.measure_base(model, lambda: _measure(model, head, splits, cfg, pad_id))
    probe = _start_head(model, head, splits, cfg, pad_id, run_dir, resume_from, group.is_main)
    if not group.is_main:  # the other processes of a torchrun launch only train; rank 0 writes
        train(model, installed, splits.train, splits.val, cfg, run_dir, pad_id, resume_from,
              objective=rm_objective(head, cfg.preference))
        return run_dir
    trainable, total = common.print_parameter_counts(model)
    result = train(model, installed, splits.train, splits.val, cfg, run_dir, pad_id, resume_from, desc="rm",
                   objective=rm_objective(head, cfg.preference))

    save_adapter(model, cfg.method, run_dir / "adapter", common.base_model_path(cfg))
    save_head(head, run_dir / HEAD_FILE, kind="reward", pooling=cfg.preference.reward_pooling)
    say("evaluating the reward model ...")
    after = _measure(model, head, splits, cfg, pad_id)
    extra = {**common.training_summary(result, trainable, total), "data": splits.notes}
    if probe is not None:
        extra["head_probe"] = probe
    common.finish_report(run_dir, before, after, extra, model)
    return run_dir
