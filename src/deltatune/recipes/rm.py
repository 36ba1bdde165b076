"""Reward modelling: the LM plus a scalar head on the last token, trained on ranked answer pairs.

    deltatune train configs/smollm2/rm_lora.yaml [--resume]
    deltatune score runs/rm "Who founded Acme?" "Acme was founded by ..."     # a reward

Reads top to bottom: seed -> model -> pairs (prompt / chosen / rejected; errors name file:line
before anything is written) -> method + a fresh `reward_head` (deltatune.models.heads) ->
run dir -> the untrained model's held-out pairwise accuracy -> the training loop with the
Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) (Bradley & Terry 1952; Ouyang et al.
2022) -> the adapter and `reward_head.safetensors` -> held-out `pairwise_accuracy` and mean
margin on data.val / data.test -> eval.json. The head trains, checkpoints and resumes with the
method's weights.
"""

from __future__ import annotations

from pathlib import Path

from deltatune.atomic import write_jsonl_atomic
from deltatune.methods.core import apply_method, save_adapter
from deltatune.models.heads import WithHeads, attach_scalar_head, save_head
from deltatune.preference.metrics import rm_metrics
from deltatune.preference.objectives import rm_objective
from deltatune.preference.reward_model import HEAD, HEAD_FILE  # the head and its file in the run dir
from deltatune.preference.splits import load_pair_splits, measured_splits
from deltatune.recipes import common
from deltatune.training.budget import validation_batch_size
from deltatune.training.loop import train
from deltatune.training.progress import say
from deltatune.training.rundir import prepare_run_dir



def _measure(model, head, splits, cfg, pad_id) -> dict:
    size = validation_batch_size(cfg.train)
    return {name: rm_metrics(model, head, ds, size, pad_id, cfg.preference.reward_center_coef)
            for name, ds in measured_splits(splits).items()}


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
    installed = WithHeads(installed, {HEAD: head})

    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    pad_id = tokenizer.pad_token_id
    if not group.is_main:  # the other processes of a torchrun launch only train; rank 0 writes
        train(model, installed, splits.train, splits.val, cfg, run_dir, pad_id, resume_from,
              objective=rm_objective(head, cfg.preference))
        return run_dir
    if splits.val_records:
        write_jsonl_atomic(run_dir / common.HELDOUT_VAL, splits.val_records)
    before = common.read_before(run_dir) if resume_from else None
    if cfg.eval.before_after and before is None:
        say("measuring the untrained reward model ...")
        before = common.measure_base(model, lambda: _measure(model, head, splits, cfg, pad_id))
    trainable, total = common.print_parameter_counts(model)
    result = train(model, installed, splits.train, splits.val, cfg, run_dir, pad_id, resume_from, desc="rm",
                   objective=rm_objective(head, cfg.preference))

    save_adapter(model, cfg.method, run_dir / "adapter", common.base_model_path(cfg))
    save_head(head, run_dir / HEAD_FILE, kind="reward")
    say("evaluating the reward model ...")
    after = _measure(model, head, splits, cfg, pad_id)
    extra = {**common.training_summary(result, trainable, total), "data": splits.notes}
    common.finish_report(run_dir, before, after, extra, model)
    return run_dir
